"""Bundle → runnable Model: ``load`` and ``verify``, the layer above the file format.

:mod:`nnre.bundle` checks the file; this module parses the equations against the weights
(or takes the compiled Program from :mod:`nnre.cache`), and checks that the stored signature
and dims are the ones the equations give (``formats/bundle.md`` §3.2). A location may be a
URL (``https://``, ``s3://``): :func:`resolve` fetches it into the cache first
(:mod:`nnre.remote`).
"""

from __future__ import annotations

import numpy as np

from nnre import budget, remote
from nnre import cache as compile_cache
from nnre.bundle.read import Bundle, Source, check_tensor_digests, decode
from nnre.bundle.schema import SIDES, Header
from nnre.errors import BundleError
from nnre.model import Model, TensorSpec


def load(src: Source, *, check_data: bool | None = None, cache: bool = True,
         mapped: bool | None = None) -> Model:
    """Open a bundle as a runnable Model: structure, header digest, equations, weights and
    every tensor's sha256 checked, so a corrupted weight is never used unless asked.

    Tensor digests (``check_data``): by default checked at every load, except for a file the
    compile cache has seen verified before with the same device, inode, size, mtime and
    ctime (a record signed with the user's key; see :mod:`nnre.cache`), so a large model
    pays the hash once. ``check_data=False`` skips the check (the user opts out);
    ``True`` forces it. Files up to ``COPY_BELOW`` (64 MiB) are read into memory, larger
    ones mapped (``mapped``): a mapped model must be replaced by renaming a new file over
    the old one, never by writing into it, or the process may die with SIGBUS.

    The compiled Program is taken from the compile cache when an exact entry exists (no
    SymPy import then) and stored there after a compile; ``cache=False`` or
    ``NNRE_NO_CACHE=1`` bypasses it.

    ``src`` may be an ``https://``, ``http://`` or ``s3://`` URL (the ``remote`` extra): the
    file is fetched once into the cache, verified in full, and read from there (see
    :func:`resolve`).
    """
    bundle = decode(resolve(src), check_data=False, mapped=mapped)
    use_cache = cache and compile_cache.enabled()
    if check_data is None:
        check_data = not (use_cache and bundle.identity is not None
                          and compile_cache.is_verified(bundle.bundle_id, bundle.identity))
    if check_data:
        check_tensor_digests(bundle.buffer, bundle.data_start, bundle.header.tensors,
                             bundle.source)
        if use_cache and bundle.identity is not None and bundle.mapped:
            compile_cache.mark_verified(bundle.bundle_id, bundle.identity)
    return model_of(bundle, cache=cache)


def verify(src: Source) -> Bundle:
    """Check everything without running the model: structure, every digest, equations
    (always compiled afresh, never from the cache)."""
    return verified(src)[0]


def verified(src: Source) -> tuple[Bundle, Model]:
    """:func:`verify`, also giving the compiled model (what ``nnre verify`` reports on)."""
    bundle = decode(resolve(src), check_data=True)
    return bundle, model_of(bundle, cache=False)


def resolve(location: Source) -> Source:
    """What to read for a model location: a URL's verified local copy (fetched into the cache
    when the remote content is not there yet; :func:`nnre.remote.fetch`), anything else as
    it is. The one place every caller with a user's location (``nnre run``, ``nnre serve``,
    ``load``) goes through; a changed remote file gives another local path."""
    if remote.is_remote(location):
        assert isinstance(location, str)
        return str(remote.fetch(location))
    return location


def model_of(bundle: Bundle, *, cache: bool = False) -> Model:
    """Build the Model from the equations and weights; its signature must match the header."""
    h = bundle.header
    use_cache = cache and compile_cache.enabled()
    model = _from_cache(bundle) if use_cache else None
    if model is not None:
        check_signature(model, h)
        return model
    model = Model.from_equations(h.equations, converted(bundle), dict(h.dims), h.dtype,
                                 metadata=h.metadata, bundle_id=bundle.bundle_id,
                                 filename=f"{bundle.source}[model.equations]")
    check_signature(model, h)
    check_language(model, h)
    if use_cache:
        shapes = {n: s.shape for n, s in model.params.items()}
        compile_cache.store(bundle.bundle_id,
                            compile_cache.Compiled(model.program, model.dims, shapes))
    return model


def _from_cache(bundle: Bundle) -> Model | None:
    """The Model from a cached Program, if the entry exists and fits these weights exactly
    (anything unusual, e.g. non-canonical weight names, takes the full path instead)."""
    compiled = compile_cache.load(bundle.bundle_id)
    h = bundle.header
    if compiled is None or compiled.program.dtype != h.dtype or compiled.dims != h.dims:
        return None
    shapes = {n: tuple(a.shape) for n, a in bundle.tensors.items()}
    if shapes != compiled.param_shapes:
        return None
    weights = converted(bundle)
    specs = {n: TensorSpec(s, h.dtype) for n, s in shapes.items()}
    return Model(compiled.program, weights, equations=h.equations, dims=compiled.dims,
                 param_specs=specs, metadata=h.metadata, bundle_id=bundle.bundle_id)


def converted(bundle: Bundle) -> dict[str, np.ndarray]:
    """The weights in the compute dtype: the mapped arrays themselves when they already are
    (zero-copy), else copies, whose total is checked against the memory budget first."""
    item = np.dtype(bundle.header.dtype).itemsize
    copies = sum(budget.size(a.shape, item) for a in bundle.tensors.values()
                 if a.dtype != bundle.header.dtype)
    budget.check(copies, f"converting the weights to {bundle.header.dtype}",
                 lambda message: BundleError("over-budget", message, field="tensors"))
    return {n: a.astype(bundle.header.dtype, copy=False) for n, a in bundle.tensors.items()}


def check_language(model: Model, h: Header) -> None:
    """The file must require the version of the language its equations use (spec §2), so a
    reader that lacks it refuses the file by name instead of failing on an equation."""
    declared = next(int(r.split("/")[1]) for r in h.requires if r.startswith("equations/"))
    if model.language > declared:
        raise BundleError("signature-mismatch", f"the equations use version {model.language} "
                          f"of the equation language but the file requires "
                          f"equations/{declared}", field="header.requires")


def check_signature(model: Model, h: Header) -> None:
    """The stored dims and signature must equal what the equations and weights give."""
    if dict(model.dims) != h.dims:
        raise BundleError("signature-mismatch", f"header dims {h.dims} but the equations "
                          f"and weights give {dict(model.dims)}", field="header.model.dims")
    for side in SIDES:
        got = {n: (tuple(s.shape), s.dtype) for n, s in getattr(model, side).items()}
        want = {n: (s.shape, s.dtype) for n, s in h.signature[side].items()}
        if got != want:
            raise BundleError("signature-mismatch", f"header says {want} but the equations "
                              f"give {got}", field=f"header.model.signature.{side}")
    for name, codec in (h.metadata.get("codecs") or {}).items():
        count = model.program.ids.get(name)
        if codec.get("id") == "char" and count is not None and count != len(codec["vocab"]):
            raise BundleError("bad-codec", f"{len(codec['vocab'])} entries, but the ids "
                              f"input {name!r} indexes {count} rows",
                              field=f"header.metadata.codecs.{name}.vocab")
