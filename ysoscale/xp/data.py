"""Reading normalised XP coefficients from an ``ysoscale ingest-xp`` store.

:func:`read_store` loads a whole store (or a random sample of it) for training;
:class:`XPLookup` fetches the stars of given source_ids, the access pattern of the
inference pass (one cube chunk at a time). Both return :class:`~ysoscale.xp.normalise.XPArrays`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from ysoscale.xp.normalise import XPArrays, normalise

REQUIRED = ("bp_coefficients", "bp_coefficient_errors", "rp_coefficients", "rp_coefficient_errors")
CORRELATIONS = ("bp_coefficient_correlations", "rp_coefficient_correlations")


def _open(path: str | Path) -> zarr.Group:
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"no XP store at {path} (make one with `ysoscale ingest-xp`)")
    group = zarr.open_group(str(path), mode="r")
    names = set(group.array_keys())
    missing = [name for name in ("source_id", *REQUIRED) if name not in names]
    if missing:
        raise ValueError(
            f"{path} is not an ingest-xp store: variable(s) {missing} missing (has {sorted(names)})"
        )
    return group


def _rows(group: zarr.Group, rows: np.ndarray | slice, ids: np.ndarray) -> XPArrays:
    """Normalised arrays of the store rows ``rows`` (sorted indices or a slice)."""

    def take(name: str) -> np.ndarray:
        array = group[name]
        if isinstance(rows, slice):
            return np.asarray(array[rows])
        if len(rows) == 0:
            return np.empty((0, *array.shape[1:]), dtype=array.dtype)
        return np.asarray(array.oindex[rows])

    has_corr = all(name in group.array_keys() for name in CORRELATIONS)
    corr = [take(name) for name in CORRELATIONS] if has_corr else [None, None]
    return normalise(ids, *(take(name) for name in REQUIRED), *corr)


def read_store(
    path: str | Path,
    *,
    max_stars: int | None = None,
    seed: int = 0,
) -> XPArrays:
    """All stars of the store (or ``max_stars`` of them, drawn at random), normalised.

    Raises
    ------
    FileNotFoundError
        If nothing is at ``path``.
    ValueError
        Naming the missing variables if ``path`` is not an ingest-xp store.

    Examples
    --------
    >>> arrays = read_store("xp.zarr")  # doctest: +SKIP
    >>> arrays.coefficients.shape       # doctest: +SKIP
    (2000, 110)
    """
    group = _open(path)
    ids = np.asarray(group["source_id"][:], dtype=np.int64)
    if max_stars is not None and max_stars < len(ids):
        rows = np.sort(np.random.default_rng(seed).choice(len(ids), max_stars, replace=False))
        return _rows(group, rows, ids[rows])
    return _rows(group, slice(None), ids)


class XPLookup:
    """The stars of given source_ids from one store (opened once, index kept in memory).

    Examples
    --------
    >>> lookup = XPLookup("xp.zarr")                   # doctest: +SKIP
    >>> found, arrays = lookup.fetch(np.array([42]))  # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.group = _open(path)
        self.source_id = np.asarray(self.group["source_id"][:], dtype=np.int64)
        if len(self.source_id) > 1 and (np.diff(self.source_id) <= 0).any():
            raise ValueError(f"{path}: source_id is not sorted and unique (re-run ingest-xp)")

    def fetch(self, source_id: np.ndarray) -> tuple[np.ndarray, XPArrays]:
        """``found`` (n,) bool and the normalised arrays of the found stars, in input order."""
        source_id = np.asarray(source_id, dtype=np.int64)
        if len(self.source_id) == 0:
            found = np.zeros(len(source_id), dtype=bool)
            return found, _rows(self.group, np.empty(0, dtype=np.int64), self.source_id)
        where = np.minimum(np.searchsorted(self.source_id, source_id), len(self.source_id) - 1)
        found = self.source_id[where] == source_id
        rows, inverse = np.unique(where[found], return_inverse=True)
        arrays = _rows(self.group, rows, self.source_id[rows])
        return found, arrays.subset(inverse)


__all__ = ["CORRELATIONS", "REQUIRED", "XPLookup", "read_store"]
