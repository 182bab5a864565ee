"""What a validation report is made from: a posterior cube, reference labels, catalog columns.

The adapter between files and the numeric checks: reads the cube (a random subset of at
most ``max_stars`` stars), the truth table (``source_id`` + ``true_{param}`` columns; a
parquet, CSV or FITS table or a HATS catalog such as the summary catalog ``ysoscale demo``
and ``ysoscale infer`` write) and the observed catalog columns (positions, Gaia photometry
and parallax for the CMD, which bands each star has), and aligns them by ``source_id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ysoscale.simulate.catalog import TRUE_PREFIX

YOUNG_LOG10_AGE = 7.0
"""``p_young`` computed from the samples is P(log10_age < this), i.e. younger than 10 Myr."""

CMD_COLUMNS = ("gaia_g_mag", "gaia_bp_mag", "gaia_rp_mag", "parallax")
POSITION_COLUMNS = ("ra", "dec")


@dataclass
class ValidationData:
    """Arrays of the stars of one report, aligned along ``star``.

    Attributes
    ----------
    cube_path : the cube
    params : cube parameter names
    source_id : (star,)
    samples : (star, sample, param) float
    median : (star, param) posterior medians
    p16, p84 : (star, param) 1-sigma bounds
    flags, n_bands, healpix29 : (star,)
    attrs : root attributes of the cube (model card, run configuration)
    flag_bits, flag_descriptions : flag name -> bit, flag name -> meaning
    n_cube : stars in the cube (before any subsampling)
    p_young : (star,) P(young); ``p_young_source`` says where it came from (None: neither a
        ``p_young`` variable nor ``log10_age`` samples)
    ess : (star,) effective sample sizes, if the cube has them
    log_weight : (star, sample) importance log weights, if the cube has them (``infer
        --importance``)
    truth_path, truth : reference table and (star, param) true values (NaN: no label)
    truth_params : cube parameters with a ``true_{param}`` column
    catalog_source : where the catalog columns came from (None: nowhere)
    catalog : DataFrame (star rows) of catalog columns found, aligned with ``source_id``
    """

    cube_path: Path
    params: list[str]
    source_id: np.ndarray
    samples: np.ndarray
    median: np.ndarray
    p16: np.ndarray
    p84: np.ndarray
    flags: np.ndarray
    n_bands: np.ndarray
    healpix29: np.ndarray
    attrs: dict[str, Any]
    flag_bits: dict[str, int]
    flag_descriptions: dict[str, str]
    n_cube: int
    p_young: np.ndarray | None = None
    p_young_source: str | None = None
    ess: np.ndarray | None = None
    log_weight: np.ndarray | None = None
    truth_path: Path | None = None
    truth: np.ndarray | None = None
    truth_params: tuple[str, ...] = ()
    catalog_source: str | None = None
    catalog: pd.DataFrame | None = None

    @property
    def n(self) -> int:
        return len(self.source_id)

    def truth_of(self, params: list[str] | tuple[str, ...]) -> np.ndarray:
        """True values (star, len(params)) of some of :attr:`truth_params`."""
        assert self.truth is not None, "no truth table was given"
        return self.truth[:, [self.truth_params.index(p) for p in params]]

    def samples_of(self, params: list[str] | tuple[str, ...]) -> np.ndarray:
        return self.samples[:, :, [self.params.index(p) for p in params]]

    def median_of(self, params: list[str] | tuple[str, ...]) -> np.ndarray:
        return self.median[:, [self.params.index(p) for p in params]]


def _json_attr(value: Any, default: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return default
    return default if value is None else value


def _read_cube(path: Path, max_stars: int, seed: int) -> ValidationData:
    from ysoscale.infer.cube import open_cube

    if not path.exists():
        raise ValueError(f"cube {path} does not exist")
    try:
        cube = open_cube(path)
    except Exception as error:  # zarr raises several types for "not a zarr store"
        raise ValueError(f"{path} is not a posterior cube (zarr): {error}") from error
    missing = [v for v in ("samples", "summary", "flags") if v not in cube]
    if missing:
        raise ValueError(f"{path} is not a posterior cube: no variable(s) {missing}")
    n_cube = cube.sizes["star"]
    if n_cube == 0:
        raise ValueError(f"cube {path} holds no stars")
    if n_cube > max_stars:
        pick = np.sort(np.random.default_rng(seed).choice(n_cube, max_stars, replace=False))
        cube = cube.isel(star=pick)
    params = [str(p) for p in cube.param.values]
    stat = [str(s) for s in cube.stat.values]
    summary = cube.summary.values.astype(float)
    flag_attrs = cube.flags.attrs
    names = str(flag_attrs.get("flag_meanings", "")).split()
    masks = [int(m) for m in np.atleast_1d(flag_attrs.get("flag_masks", []))]
    data = ValidationData(
        cube_path=path,
        params=params,
        source_id=cube.source_id.values.astype(np.int64),
        samples=cube.samples.values.astype(float),
        median=summary[:, stat.index("median")],
        p16=summary[:, stat.index("p16")],
        p84=summary[:, stat.index("p84")],
        flags=cube.flags.values.astype(np.uint32),
        n_bands=cube.n_bands.values if "n_bands" in cube else np.zeros(cube.sizes["star"]),
        healpix29=(
            cube.healpix29.values.astype(np.int64)
            if "healpix29" in cube.coords
            else np.full(cube.sizes["star"], -1, np.int64)
        ),  # fmt: skip
        attrs=dict(cube.attrs),
        flag_bits=dict(zip(names, masks, strict=False)),
        flag_descriptions=_json_attr(flag_attrs.get("flag_descriptions"), {}),
        n_cube=n_cube,
    )
    if "ess" in cube:
        data.ess = cube.ess.values.astype(float)
    if "log_weight" in cube:
        data.log_weight = cube.log_weight.values.astype(float)
    # the cube's p_young (ysoscale infer) if it has values at this report's threshold; a
    # cube of a model without log10_age has an all-NaN p_young and gets no p_young here
    young_myr = 10.0 ** (YOUNG_LOG10_AGE - 6.0)
    cube_young = cube.p_young.values.astype(float) if "p_young" in cube else None
    same_threshold = np.isclose(float(cube.attrs.get("young_age_myr", young_myr)), young_myr)
    if cube_young is not None and same_threshold and np.isfinite(cube_young).any():
        data.p_young = cube_young
        data.p_young_source = "the cube's p_young variable"
    elif "log10_age" in params:
        from ysoscale.validate.accuracy import probability_below

        age = data.samples[:, :, params.index("log10_age")]
        data.p_young = probability_below(age, YOUNG_LOG10_AGE)
        data.p_young_source = (
            f"computed here as P(log10_age < {YOUNG_LOG10_AGE:g}) from the posterior samples "
            "(the cube has no p_young values at this threshold)"
        )
    return data


def _hats_columns(path: Path) -> list[str]:
    import lsdb

    return list(lsdb.open_catalog(path).columns)


def read_reference(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A table (parquet, CSV, FITS) or HATS catalog directory, whole or some ``columns``.

    Raises
    ------
    ValueError
        If ``path`` does not exist or is not a readable table.

    Examples
    --------
    >>> frame = read_reference("truth.parquet", ["source_id", "true_av"])  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"table {path} does not exist")
    if path.is_dir():
        import lsdb

        try:
            available = _hats_columns(path)
        except Exception as error:  # hats raises FileNotFoundError, ValueError, …
            raise ValueError(f"{path} is a directory but not a HATS catalog: {error}") from error
        wanted = available if columns is None else [c for c in columns if c in available]
        frame = lsdb.open_catalog(path, columns=wanted).compute(progress_bar=False)
        return frame.reset_index(drop=True)
    from ysoscale.catalog.readers import read_table

    try:
        frame = read_table(path)
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(f"cannot read table {path}: {error}") from error
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    return frame


def _align(frame: pd.DataFrame, source_id: np.ndarray, path: Path) -> pd.DataFrame:
    """Rows of ``frame`` in the order of ``source_id`` (all-NaN rows where absent)."""
    if "source_id" not in frame.columns:
        raise ValueError(f"{path} has no source_id column (columns: {list(frame.columns)[:12]})")
    ids = pd.to_numeric(frame["source_id"], errors="coerce")
    frame = frame.loc[ids.notna()].assign(source_id=ids[ids.notna()].astype(np.int64))
    duplicated = frame["source_id"].duplicated()
    if duplicated.any():
        example = int(frame["source_id"][duplicated].iloc[0])
        raise ValueError(f"{path}: source_id {example} occurs more than once")
    return frame.set_index("source_id").reindex(source_id)


def _band_columns() -> list[str]:
    from ysoscale.catalog.columns import mag_column
    from ysoscale.physics.passbands import BAND_IDS

    return [mag_column(b) for b in BAND_IDS]


def _catalog_columns() -> list[str]:
    return list(dict.fromkeys([*POSITION_COLUMNS, *CMD_COLUMNS, *_band_columns()]))


def _attach_truth(data: ValidationData, path: Path) -> pd.DataFrame:
    if path.is_dir():
        header = _hats_columns(path) if path.exists() else []
    else:
        header = None
    wanted = None
    if header is not None:
        wanted = ["source_id", *[c for c in header if c.startswith(TRUE_PREFIX)]]
        wanted += [c for c in _catalog_columns() if c in header]
    frame = read_reference(path, wanted)
    if "source_id" not in frame.columns:
        raise ValueError(f"truth table {path} has no source_id column")
    labels = [c for c in frame.columns if str(c).startswith(TRUE_PREFIX)]
    if not labels:
        raise ValueError(f"truth table {path} has no {TRUE_PREFIX}<param> columns")
    params = tuple(p for p in data.params if TRUE_PREFIX + p in labels)
    if not params:
        raise ValueError(
            f"truth table {path}: none of its columns {labels} is true_<param> for a cube "
            f"parameter ({', '.join(data.params)})"
        )
    aligned = _align(frame, data.source_id, path)
    truth = aligned[[TRUE_PREFIX + p for p in params]].apply(pd.to_numeric, errors="coerce")
    matched = truth.notna().any(axis=1).to_numpy()
    if not matched.any():
        raise ValueError(f"truth table {path}: no source_id matches a star of the cube")
    data.truth_path, data.truth_params = path, params
    data.truth = truth.to_numpy(dtype=float)
    return aligned


def _positions_from_healpix(healpix29: np.ndarray) -> pd.DataFrame:
    """ra/dec of the centre of each order-29 HEALPix cell (NaN where the index is -1)."""
    import cdshealpix

    ra, dec = np.full(len(healpix29), np.nan), np.full(len(healpix29), np.nan)
    ok = healpix29 >= 0
    if ok.any():
        lon, lat = cdshealpix.nested.healpix_to_lonlat(healpix29[ok].astype(np.uint64), depth=29)
        ra[ok], dec[ok] = lon.to_value("deg"), lat.to_value("deg")
    return pd.DataFrame({"ra": ra, "dec": dec})


def load(
    cube: str | Path,
    truth: str | Path | None = None,
    *,
    catalog: str | Path | None = None,
    max_stars: int = 200_000,
    seed: int = 0,
) -> ValidationData:
    """Read a cube, its reference labels and catalog columns, aligned by ``source_id``.

    Catalog columns (ra, dec, Gaia photometry and parallax, ``{band}_mag``) come from
    ``catalog`` if given, else from the truth table if it has them, else from the summary
    catalog ``infer`` wrote beside the cube (``CUBE/../summary``); positions fall back to
    the cube's ``healpix29``.

    Parameters
    ----------
    cube : posterior cube (zarr)
    truth : table or HATS catalog with ``source_id`` and ``true_{param}`` columns
    catalog : table or HATS catalog with canonical columns and ``source_id``
    max_stars : at most this many stars, a random subset (``seed``) of a larger cube

    Raises
    ------
    ValueError
        Naming the path or column that is missing or unreadable.

    Examples
    --------
    >>> data = load("demo/synthetic/posteriors.zarr", "demo/synthetic/summary")  # doctest: +SKIP
    >>> data.truth_params  # doctest: +SKIP
    ('log10_mass', 'log10_age', 'mh', 'av', 'rv', 'distance_pc', 'teff', 'logg', ...)
    """
    if max_stars < 1:
        raise ValueError(f"max_stars must be at least 1, got {max_stars}")
    data = _read_cube(Path(cube), max_stars, seed)
    from_truth = None
    if truth is not None:
        from_truth = _attach_truth(data, Path(truth))
    wanted = _catalog_columns()
    frame, source = None, None
    beside = Path(cube).resolve().parent / "summary"
    if catalog is not None:
        path = Path(catalog)
        frame = _align(read_reference(path, ["source_id", *wanted]), data.source_id, path)
        source = str(path)
    elif from_truth is not None and any(c in from_truth.columns for c in wanted):
        frame, source = from_truth, str(truth)
    elif (beside / "hats.properties").exists() or (beside / "properties").exists():
        frame = _align(read_reference(beside, ["source_id", *wanted]), data.source_id, beside)
        source = f"{beside} (the summary catalog beside the cube)"
    if frame is not None:
        frame = frame[[c for c in wanted if c in frame.columns]].reset_index(drop=True)
        frame = frame.apply(pd.to_numeric, errors="coerce")
    if frame is None or not set(POSITION_COLUMNS) <= set(frame.columns):
        positions = _positions_from_healpix(data.healpix29)
        frame = positions if frame is None else pd.concat([frame, positions], axis=1)
        source = (source + "; positions" if source else "positions") + " from healpix29"
    data.catalog, data.catalog_source = frame, source
    return data


__all__ = ["CMD_COLUMNS", "YOUNG_LOG10_AGE", "ValidationData", "load", "read_reference"]
