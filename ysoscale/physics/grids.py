"""The default model grids, made current once on the driver before workers load them."""

from __future__ import annotations

from ysoscale.cache import SOURCES_MISSING, stored_hash


def ensure_default_grids(progress: bool = True) -> dict[str, str]:
    """Build the default photometry and isochrone grids if missing or stale; return the
    content hashes the stores carry (provenance for the stores that use them).

    Where the grids' sources are not installed (a GPU node given only the cache), a built
    store counts as current, as in :func:`ysoscale.cache.cached_zarr`.

    Examples
    --------
    >>> sorted(ensure_default_grids(progress=False))  # doctest: +SKIP
    ['isochrone_grid_hash', 'photometry_grid_hash']
    """
    from ysoscale.physics.isochrones import (
        isochrone_grid_hash,
        isochrone_grid_path,
        load_isochrone_grid,
    )
    from ysoscale.physics.photometry import (
        PhotometryGridSpec,
        load_photometry_grid,
        photometry_grid_path,
    )

    spec = PhotometryGridSpec()
    grids = {
        "photometry_grid_hash": (
            photometry_grid_path(spec),
            spec.hash,
            lambda: load_photometry_grid(spec, progress=progress),
        ),
        "isochrone_grid_hash": (
            isochrone_grid_path(),
            isochrone_grid_hash,
            lambda: load_isochrone_grid(progress=progress),
        ),
    }
    hashes = {}
    for name, (path, expected, load) in grids.items():
        try:
            current = stored_hash(path) == expected()
        except SOURCES_MISSING:
            current = stored_hash(path) is not None
        if not current:
            load()
        hashes[name] = stored_hash(path) or ""
    return hashes


__all__ = ["ensure_default_grids"]
