"""Batch inference on Ray Data: :class:`Predictor`, a callable class for
``Dataset.map_batches`` that loads a bundle once per worker (the ``ray`` extra).

Columns (batches as ``batch_format="numpy"``, a dict of arrays; a pandas DataFrame works
too), chosen by the model:

* a text model (one ``char`` input, one ``sample`` output, like ``samples/lighthouse.bundle``):
  the ``text`` column (str) → ``bits_per_char`` (float64; NaN when no character was scored)
  and ``chars`` (int64), each text scored from the zero state as ``Model.score`` does, the
  rows of a batch run as one (``nnre.scoring.score_batch``);
* any other model: one column per model input, each row one example of the input's shape
  (``(T, …)`` for a recurrent model, the same T in a batch) → one column per output (its
  rows of the output's shape) and ``<output>.label`` for an ``argmax-label`` output.

Other columns pass through unchanged, so an id column stays beside its result. With
``on_error="column"`` a row that cannot be run (a character outside the vocabulary, a wrong
shape) gets its message in an ``error`` column (empty when fine) and NaN results instead of
failing the job. The class itself needs no Ray (it is a plain callable on a dict of arrays);
:func:`map_dataset` and :func:`score_file` build the Ray pipeline, importing Ray on call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nnre.errors import FeedError, NnreError

EXTRA = "pip install 'nnre[ray]'"
ON_ERROR = ("raise", "column")


class Predictor:
    """Loads the bundle at ``location`` (a path or URL, :func:`nnre.loader.resolve`) once,
    then maps batches of rows to results (the module doc gives the columns)."""

    def __init__(self, location: str, *, text_column: str = "text", prime: str | None = None,
                 skip_unknown: bool = False, on_error: str = "raise") -> None:
        from nnre.codecs import text_io
        from nnre.loader import load
        from nnre.threads import set_blas_threads

        if on_error not in ON_ERROR:
            raise FeedError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        set_blas_threads(1)  # a worker per core: BLAS threads would only contend
        self.model = load(location)
        self.text_column, self.prime = text_column, prime
        self.skip_unknown, self.on_error = skip_unknown, on_error
        try:
            text_io(self.model.metadata, list(self.model.inputs), list(self.model.outputs))
            self.text = True
        except FeedError:
            self.text = False

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        columns = _columns(batch)
        count = len(next(iter(columns.values()))) if columns else 0
        try:
            results = self._text(columns) if self.text else self._tensors(columns)
        except NnreError as err:
            if self.on_error == "raise":
                raise
            results = (self._row_by_row(columns, count) if count > 1
                       else self._failed(err, count))
        else:
            if self.on_error == "column":
                results["error"] = np.array([""] * count, dtype=object)
        return {**columns, **results}

    def _text(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from nnre.scoring import score_batch

        if self.text_column not in columns:
            raise FeedError(f"the batch has no column {self.text_column!r} (it has "
                            f"{', '.join(columns) or 'none'}); a text model scores that one")
        texts = [_text(v) for v in columns[self.text_column]]
        scores = score_batch(self.model, texts, prime=self.prime,
                             skip_unknown=self.skip_unknown, source=self.text_column)
        return {"bits_per_char": np.array([s.bits_per_char for s in scores], np.float64),
                "chars": np.array([s.chars for s in scores], np.int64)}

    def _tensors(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from nnre.codecs import LabelCodec, codecs_of
        from nnre.tensor_io import run_feeds

        recurrent = bool(self.model.state)
        feeds = {}
        for name in self.model.inputs:
            if name not in columns:
                raise FeedError(f"the batch has no column {name!r} for the model's input "
                                f"(it has {', '.join(columns) or 'none'})")
            rows = _stack(columns[name], name)
            feeds[name] = np.moveaxis(rows, 0, 1) if recurrent and rows.ndim > 1 else rows
        outputs = run_feeds(self.model, feeds, "batch")
        if recurrent:  # (T, B, …) → a row per example
            outputs = {n: np.moveaxis(v, 1, 0) for n, v in outputs.items()}
        out: dict[str, np.ndarray] = dict(outputs)
        for name, codec in codecs_of(self.model.metadata, list(outputs)).items():
            if isinstance(codec, LabelCodec) and not recurrent:
                out[f"{name}.label"] = np.array(codec.decode(outputs[name]), dtype=object)
        return out

    def _row_by_row(self, columns: Mapping[str, np.ndarray], count: int
                    ) -> dict[str, np.ndarray]:
        """The batch failed: run each row alone, so only the bad rows get an error."""
        parts = [self({k: v[i:i + 1] for k, v in columns.items()}) for i in range(count)]
        out = {}
        for name in (k for k in parts[0] if k not in columns):
            try:
                out[name] = np.concatenate([p[name] for p in parts])
            except ValueError:  # rows of different shapes (a recurrent model's T)
                out[name] = np.array([p[name][0] for p in parts] + [None],
                                     dtype=object)[:-1]
        return out

    def _failed(self, err: NnreError, count: int) -> dict[str, np.ndarray]:
        """A failed row: NaN results (their shapes as the model declares) and the message."""
        if self.text:
            out = {"bits_per_char": np.full(count, np.nan), "chars": np.zeros(count, np.int64)}
        else:
            lead = (count,) if not self.model.state else (count, 1)
            out = {n: np.full((*lead, *s.shape), np.nan) for n, s in self.model.outputs.items()}
            for name, codec in (self.model.metadata.get("codecs") or {}).items():
                if name in out and codec.get("id") == "argmax-label" and not self.model.state:
                    out[f"{name}.label"] = np.array([""] * count, dtype=object)
        out["error"] = np.array([str(err).split("\n", 1)[0]] * count, dtype=object)
        return out


def _columns(batch: Any) -> dict[str, np.ndarray]:
    """A dict of column arrays from a numpy batch or a pandas DataFrame."""
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas, without importing it
        return {str(c): batch[c].to_numpy() for c in batch.columns}
    if not isinstance(batch, Mapping):
        raise FeedError(f"a batch is a dict of columns (batch_format='numpy') or a pandas "
                        f"DataFrame, not {type(batch).__name__}")
    return {str(k): np.asarray(v) if not isinstance(v, np.ndarray) else v
            for k, v in batch.items()}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise FeedError("a text is not UTF-8") from None
    if not isinstance(value, str):
        raise FeedError(f"a text is a str, not {type(value).__name__}")
    return value


def _stack(column: np.ndarray, name: str) -> np.ndarray:
    """A column as one array with the rows leading (Ray gives a column of ragged or
    nested lists as an object array of rows)."""
    if column.dtype != object:
        return column
    try:
        return np.stack([np.asarray(row, dtype=np.float64) for row in column])
    except (ValueError, TypeError):
        raise FeedError(f"the rows of column {name!r} are not numbers of one shape") from None


def map_dataset(dataset: Any, location: str, *, workers: int = 1, batch_size: int = 256,
                num_cpus: float | None = None, **options: Any) -> Any:
    """``dataset.map_batches`` with a pool of ``workers`` :class:`Predictor` actors, each
    loading the bundle once; ``options`` go to the Predictor.

    Each actor reserves ``num_cpus``: by default 1, or less when the cluster has fewer than
    ``workers + 1`` CPUs, so that one stays free for Ray Data's read and write tasks (with
    every CPU held by an actor they never start and the job waits forever, as
    ``ray.init(num_cpus=2)`` with 2 workers of 1 CPU did)."""
    ray_data = _ray_data()
    if num_cpus is None:
        import ray

        cpus = float(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else 0
        num_cpus = min(1.0, max(0.0, (cpus - 1) / workers)) if cpus else 1.0
    return dataset.map_batches(
        Predictor, fn_constructor_args=(location,), fn_constructor_kwargs=options,
        compute=ray_data.ActorPoolStrategy(size=workers), num_cpus=num_cpus,
        batch_size=batch_size, batch_format="numpy")


def read(path: str) -> Any:
    """A Ray Dataset of a JSON Lines (``.jsonl``, ``.json``) or Parquet file or folder."""
    ray_data = _ray_data()
    suffix = path.rstrip("/").rsplit(".", 1)[-1].lower()
    if suffix in ("jsonl", "json"):
        return ray_data.read_json(path, lines=True)
    if suffix == "parquet":
        return ray_data.read_parquet(path)
    raise FeedError(f"{path}: give a .jsonl or .parquet file (or a folder named so)")


def write(dataset: Any, folder: str) -> None:
    """Write the results as Parquet, or as JSON Lines when ``folder`` ends in ``.jsonl``
    (Ray writes a folder of files, one or more per block)."""
    if folder.rstrip("/").lower().endswith(".jsonl"):
        dataset.write_json(folder)
    else:
        dataset.write_parquet(folder)


def _ray_data() -> Any:
    try:
        import ray.data
    except ImportError:
        raise NnreError(f"batch inference on Ray needs the ray extra: {EXTRA}") from None
    return ray.data
