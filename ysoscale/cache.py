"""Where ysoscale keeps the stores it builds, and how it knows they are current.

Built products (the converted spectral grid, the photometry grid, the isochrone grid)
live in one cache directory, by default the user's cache directory from
:mod:`platformdirs`; set ``YSOSCALE_CACHE_DIR`` to put them elsewhere (a shared
project directory on HPC, a temporary directory in tests).

A store records the content hash of everything it was built from in its
``content_hash`` attribute. :func:`cached_zarr` rebuilds a store only when that hash
changes, so a second build with the same inputs is a no-op.

On a machine that has the built stores but not their sources (a GPU node or a
container given only the cache directory), the hash cannot be computed: the cached
store is then used as it is, with a warning that names the hash it was built with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import xarray as xr
from filelock import FileLock

CACHE_ENV = "YSOSCALE_CACHE_DIR"


def cache_dir() -> Path:
    """Return (and create) the directory that holds ysoscale's built stores.

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ["YSOSCALE_CACHE_DIR"] = tempfile.mkdtemp()
    >>> cache_dir().is_dir()
    True
    """
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("ysoscale")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_hash(*parts: Any) -> str:
    """Return a sha256 hex digest of ``parts`` (arrays, strings, numbers, dicts).

    Arrays are hashed by dtype, shape and bytes; other objects through their JSON
    form with sorted keys, so equal inputs always give the same digest.

    Examples
    --------
    >>> content_hash(np.arange(3), "g23") == content_hash(np.arange(3), "g23")
    True
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            digest.update(f"{arr.dtype.str}{arr.shape}".encode())
            digest.update(arr.tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stored_hash(path: Path) -> str | None:
    """Return the ``content_hash`` attr of the zarr store at ``path``, or None."""
    if not path.exists():
        return None
    try:
        with xr.open_zarr(path) as ds:
            return ds.attrs.get("content_hash")
    except Exception:  # a half-written or foreign store is simply not current
        return None


SOURCES_MISSING = (ImportError, FileNotFoundError)
"""What computing a content hash raises when the sources of a store are not installed."""


def cached_zarr(
    path: Path,
    expected_hash: str | Callable[[], str],
    build: Callable[[], xr.Dataset],
    *,
    force: bool = False,
) -> tuple[xr.Dataset, bool]:
    """Open the store at ``path`` if current, else ``build()`` it and write it there.

    The new store is written next to the old one and moved into place only when
    complete, so an interrupted build never leaves a store that looks current. A lock
    file next to the store (``<name>.lock``) serialises processes that share the cache
    (parallel test workers, several jobs on one node) while a store is built: one
    builds, the others wait and then open what it wrote. A current store is opened
    without the lock, so a read-only shared cache works.

    Parameters
    ----------
    expected_hash : str or callable
        The content hash of the inputs, or a function computing it. If the function
        raises ImportError / FileNotFoundError (the sources are not installed here) and
        a built store exists, that store is used with a warning.

    Returns
    -------
    dataset, built
        The dataset loaded into memory, and whether it was (re)built.
    """
    if callable(expected_hash):
        try:
            expected_hash = expected_hash()
        except SOURCES_MISSING as exc:
            found = stored_hash(path)
            if found is None or force:
                raise
            warnings.warn(
                f"cannot check {path} against its sources ({exc}); using the cached store "
                f"as built (content hash {found[:12]})",
                stacklevel=2,
            )
            expected_hash = found
    if not force and stored_hash(path) == expected_hash:
        return _load(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        if not force and stored_hash(path) == expected_hash:  # another process built it
            return _load(path), False
        dataset = build()
        dataset.attrs["content_hash"] = expected_hash
        tmp = path.with_name(path.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        dataset.to_zarr(tmp, mode="w", consolidated=True)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    return dataset, True


def _load(path: Path) -> xr.Dataset:
    """Load the store at ``path`` into memory."""
    with xr.open_zarr(path) as ds:
        # Local threads, never a distributed Client: on a Dask worker that has a
        # client (e.g. after lsdb or hats-import tasks ran there) the default
        # scheduler would be that client, and a worker plugin's setup runs in the
        # worker's event loop, where a synchronous compute through it raises.
        return ds.load(scheduler="threads")
