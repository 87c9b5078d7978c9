"""``nnre run --output`` writes atomically, to exactly the path given.

A failed write (here: an output NumPy cannot store without pickling) leaves the previous file
byte for byte and no temporary file behind; a path without ``.npz`` is written as named.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_run_cli import lstm, nnre_run  # noqa: F401 (the fixture is used by name)

from nnre.errors import OutputError
from nnre.npz import write_npz


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    write_npz(out, {"y": np.arange(3.0)})
    before = out.read_bytes()
    bad = {"a": np.ones(1000), "b": np.array([{"not": "numbers"}], dtype=object)}
    with pytest.raises(OutputError, match="cannot write output 'b'"):
        write_npz(out, bad)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]


def test_any_output_name_round_trips(tmp_path: Path) -> None:
    arrays = {"file": np.arange(2.0), "allow_pickle": np.eye(2), "c̃": np.zeros((2, 3))}
    write_npz(tmp_path / "o", arrays)
    with np.load(tmp_path / "o") as got:
        for k, v in arrays.items():
            np.testing.assert_array_equal(got[k], v)


def feed() -> str:
    return json.dumps({"x": np.ones((2, 4)).tolist()})


def test_a_path_without_suffix_is_written_as_given(lstm, tmp_path: Path) -> None:  # noqa: F811
    code, out, err = nnre_run(str(lstm), "--input", "-", "--output", str(tmp_path / "res"),
                              stdin=feed())
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    with np.load(tmp_path / "res") as got:
        assert got["y"].shape == (2, 4)


def test_an_unwritable_output_is_one_error_line(lstm, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "d").mkdir()
    for target in (tmp_path / "d", tmp_path / "missing" / "o.npz"):
        code, out, err = nnre_run(str(lstm), "--input", "-", "--output", str(target),
                                  stdin=feed())
        assert code == 1 and err.startswith("error:") and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert list((tmp_path / "d").iterdir()) == []
