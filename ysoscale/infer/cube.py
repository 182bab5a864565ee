"""The posterior cube: schema, the pre-created store, partition writes and resume records.

Layout (zarr, opened with ``xarray.open_zarr`` or :func:`open_cube`)::

    samples    (star, sample, param)  float32  posterior samples, NaN where not inferred
    summary    (star, stat, param)    float32  median, p16, p84, mean, std of the samples
    flags      (star)                 uint32   bit mask of reasons (attrs), 0 = clean
    n_bands    (star)                 int16    bands the star was inferred from
    p_young    (star)                 float32  P(age < young_age_myr); NaN if not inferred or
                                               the model has no log10_age
    p_disk     (star)                 float32  P(disk) from the has_disk samples; NaN if not
                                               inferred or the model has no has_disk
    condition_pattern (star)          uint16   inputs the estimator was conditioned on: bit i
                                               = CONDITION_PATTERN_BITS[i] (gaia 1, tmass 2,
                                               wise 4, ps1 8, sdss 16, galex 32, skymapper 64,
                                               parallax 128); 0 if not inferred
    log_weight (star, sample)         float32  with importance weighting only (``infer
                                               --importance``): self-normalised log weight of
                                               each sample (-inf = weight zero); summary and
                                               p_young are then weighted
    ess        (star)                 float32  with importance weighting only: effective
                                               sample size (Σw)²/Σw²; stars below the
                                               threshold get flags LOW_ESS
    source_id  (star)  coordinate     int64    the input's source_id; -1 on padding rows
    healpix29  (star)  coordinate     int64    HEALPix order-29 nested index; -1 if unknown
    param, stat        coordinates             names; units/descriptions in their attrs
    partition_rows, partition_start, partition_order, partition_pixel  (partition) int64
    partition_done     (partition)    uint8    1 once the partition is completely written

Chunk ownership: each input partition owns ``ceil(rows / star_chunk)`` whole chunks along
``star``, starting at ``partition_start`` (a multiple of ``star_chunk``). Its last chunk is
completed by *padding rows* (``flags`` has :data:`PADDING`, ``source_id`` -1), so no zarr
chunk is ever written by two partitions, and ``partition_done`` has one chunk per
partition. Rows of a partition not yet written read as ``flags`` :data:`NOT_WRITTEN`.
:func:`open_cube` drops the padding rows; the store itself keeps them.

Root attributes: ``model_card`` and ``run_config`` (JSON), ``estimator`` (``"npe"`` or
``"simformer"``, the kind of model that served every star), ``model`` (its directory, or
``"default"``), ``young_age_myr`` (the threshold of ``p_young``), ``star_chunk``, versions.
The bit layout of ``condition_pattern`` is in its attributes ``condition_pattern_bits``
(JSON list of names, bit ``i`` = ``1 << i``) and ``flag_masks``/``flag_meanings``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from ysoscale import __version__
from ysoscale.catalog.quality import FLAG_DESCRIPTIONS, RowFlag
from ysoscale.infer.kernel import CONDITION_PATTERN_BITS, P16, P84, STATS
from ysoscale.nn.predictive import DEFAULT_AGE_THRESHOLD_MYR
from ysoscale.physics.passbands import BAND_LIST_VERSION

PADDING = 1 << 31
"""Flag of the rows that complete a partition's last chunk; they hold no star."""
NOT_WRITTEN = 1 << 30
"""Flag (the store's fill value) of rows whose partition has not been written yet."""
LOW_ESS = 1 << 29
"""Flag of stars whose importance weights have an effective sample size below the threshold
(:class:`~ysoscale.infer.kernel.SampleWeighting` ``ood_threshold``): the estimator's samples
barely overlap the likelihood (out of distribution, or the forward model cannot explain the
star); their weighted summaries rest on a few samples, or none."""

FLAG_BITS: dict[str, int] = {
    **{flag.name: int(flag) for flag in RowFlag},
    "LOW_ESS": LOW_ESS,
    "NOT_WRITTEN": NOT_WRITTEN,
    "PADDING": PADDING,
}
FLAG_MEANINGS: dict[str, str] = {
    **{flag.name: text for flag, text in FLAG_DESCRIPTIONS.items()},
    "LOW_ESS": "importance weighting: effective sample size below the threshold (the "
    "estimator's samples barely overlap the likelihood)",
    "NOT_WRITTEN": "the star's partition has not been inferred yet (interrupted run)",
    "PADDING": "padding row completing its partition's last chunk; no star",
}
assert not (PADDING | NOT_WRITTEN | LOW_ESS) & sum(int(f) for f in RowFlag), "flag bits overlap"

PARAM_UNITS: dict[str, str] = {
    "log10_mass": "dex(M_sun)",
    "log10_age": "dex(yr)",
    "mh": "dex",
    "log10_distance": "dex(pc)",
    "distance_modulus": "mag",
    "av": "mag",
    "rv": "",
    "distance_pc": "pc",
    "teff": "K",
    "logg": "dex(cm s-2)",
    "log10_lum": "dex(L_sun)",
    "radius": "R_sun",
    "disk_frac": "",
    "disk_temp": "K",
}
PARAM_DESCRIPTIONS: dict[str, str] = {
    "log10_mass": "initial stellar mass",
    "log10_age": "age",
    "mh": "metallicity [M/H]",
    "log10_distance": "distance",
    "distance_modulus": "distance modulus",
    "av": "V-band extinction A_V",
    "rv": "extinction-curve slope R_V",
    "distance_pc": "distance (from the sampled distance parameter)",
    "teff": "effective temperature (isochrones at each sample; NaN off the tracks)",
    "logg": "surface gravity (isochrones at each sample; NaN off the tracks)",
    "log10_lum": "bolometric luminosity (isochrones at each sample; NaN off the tracks)",
    "radius": "stellar radius (isochrones at each sample; NaN off the tracks)",
    "disk_frac": "disk luminosity / stellar luminosity",
    "disk_temp": "disk temperature",
}
STAT_DESCRIPTIONS: dict[str, str] = {
    "median": "median of the samples",
    "p16": f"{P16:.5f} quantile of the samples (1-sigma lower bound)",
    "p84": f"{P84:.5f} quantile of the samples (1-sigma upper bound)",
    "mean": "mean of the samples",
    "std": "standard deviation of the samples (ddof=0)",
}
STAR_VARIABLES = (
    "samples",
    "summary",
    "flags",
    "n_bands",
    "p_young",
    "p_disk",
    "condition_pattern",
    "source_id",
    "healpix29",
)
"""Variables (and coordinates) along ``star`` that every partition writes."""
WEIGHT_VARIABLES = ("log_weight", "ess")
"""Variables along ``star`` of a cube with importance weights (``weighted``)."""


@dataclass(frozen=True)
class Layout:
    """Where each input partition lives along ``star``.

    Parameters
    ----------
    rows : tuple of int
        Rows of each partition, in partition order.
    order, pixel : tuple of int
        HEALPix order and pixel of each partition of a HATS catalog; for a partition of a
        plain file, order -1 and the partition number.
    star_chunk : int
        Chunk length along ``star``; each partition owns whole chunks.

    Examples
    --------
    >>> layout = Layout(rows=(5, 0, 9), order=(-1, -1, -1), pixel=(0, 1, 2), star_chunk=4)
    >>> layout.start.tolist(), layout.n_star
    ([0, 8, 8], 20)
    """

    rows: tuple[int, ...]
    order: tuple[int, ...]
    pixel: tuple[int, ...]
    star_chunk: int

    def __post_init__(self) -> None:
        for name in ("rows", "order", "pixel"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.rows) == len(self.order) == len(self.pixel):
            raise ValueError("rows, order and pixel must have one entry per partition")
        if self.star_chunk < 1 or min(self.rows, default=0) < 0:
            raise ValueError("star_chunk must be positive and rows non-negative")

    @property
    def n_partitions(self) -> int:
        return len(self.rows)

    @property
    def n_chunks(self) -> np.ndarray:
        """Chunks owned by each partition."""
        return -(-np.asarray(self.rows, dtype=np.int64) // self.star_chunk)

    @property
    def start(self) -> np.ndarray:
        """First star index of each partition (a multiple of ``star_chunk``)."""
        owned = self.n_chunks * self.star_chunk
        return np.concatenate([[0], np.cumsum(owned)[:-1]]).astype(np.int64)

    @property
    def n_star(self) -> int:
        """Length of the ``star`` axis, padding included."""
        return int(self.n_chunks.sum()) * self.star_chunk

    def label(self, index: int) -> str:
        """Human name of partition ``index`` (its HEALPix pixel, or its row range)."""
        if self.order[index] >= 0:
            return f"Norder={self.order[index]}/Npix={self.pixel[index]}"
        first = sum(self.rows[:index])
        return f"rows {first}-{first + self.rows[index]}"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def template(
    layout: Layout,
    params: Sequence[str],
    n_samples: int,
    attrs: Mapping[str, Any],
    weighted: bool = False,
) -> xr.Dataset:
    """The lazily-allocated cube (nothing computed), with every attribute of the schema;
    with ``weighted`` also :data:`WEIGHT_VARIABLES`."""
    n, chunk, n_param = layout.n_star, layout.star_chunk, len(params)
    young_age_myr = float(attrs.get("young_age_myr", DEFAULT_AGE_THRESHOLD_MYR))

    def lazy(shape: tuple[int, ...], fill: float, dtype: str) -> da.Array:
        chunks = (chunk, *shape[1:])
        return da.full(shape, fill, dtype=dtype, chunks=chunks)

    flag_masks = list(FLAG_BITS.values())
    data_vars = {
        "samples": (
            ("star", "sample", "param"),
            lazy((n, n_samples, n_param), np.nan, "float32"),
            {"description": "posterior samples; units per parameter in param.attrs['units']"},
        ),
        "summary": (
            ("star", "stat", "param"),
            lazy((n, len(STATS), n_param), np.nan, "float32"),
            {"description": "statistics of the samples over the sample axis (NaN-aware)"},
        ),
        "flags": (
            ("star",),
            lazy((n,), NOT_WRITTEN, "uint32"),
            {
                "description": "bit mask of reasons a star's input was (partly) unusable; "
                "0 = clean",
                "flag_masks": flag_masks,
                "flag_meanings": " ".join(FLAG_BITS),
                "flag_descriptions": _json(FLAG_MEANINGS),
            },
        ),
        "n_bands": (
            ("star",),
            lazy((n,), 0, "int16"),
            {"description": "number of usable bands the star was inferred from"},
        ),
        "p_young": (
            ("star",),
            lazy((n,), np.nan, "float32"),
            {
                "description": f"posterior probability that the star is younger than "
                f"{young_age_myr:g} Myr (root attribute young_age_myr): the share of its "
                "log10_age samples below log10(young_age_myr * 1e6); NaN if not inferred or "
                "the model has no log10_age parameter",
                "units": "",
            },
        ),
        "p_disk": (
            ("star",),
            lazy((n,), np.nan, "float32"),
            {
                "description": "posterior probability that the star has a disk: the share of "
                "its has_disk samples above 1/2; NaN if not inferred or the model has no "
                "has_disk parameter",
                "units": "",
            },
        ),
        "condition_pattern": (
            ("star",),
            lazy((n,), 0, "uint16"),
            {
                "description": "bit mask of the inputs the estimator was conditioned on: bit i "
                "(value 1 << i) is condition_pattern_bits[i], a survey with at least one "
                "observed band (finite magnitude, positive error) or the parallax (finite, "
                "positive error); 0 if not inferred",
                "condition_pattern_bits": _json(list(CONDITION_PATTERN_BITS)),
                "flag_masks": [1 << i for i in range(len(CONDITION_PATTERN_BITS))],
                "flag_meanings": " ".join(CONDITION_PATTERN_BITS),
            },
        ),
    }
    if weighted:
        data_vars["log_weight"] = (
            ("star", "sample"),
            lazy((n, n_samples), np.nan, "float32"),
            {"description": "self-normalised log importance weight of each sample, "
             "log(p(theta) L(x | theta) / q(theta | x)) normalised to logsumexp 0; -inf = "
             "weight zero; NaN if not inferred. summary and p_young are weighted by it",
             "units": ""},
        )  # fmt: skip
        data_vars["ess"] = (
            ("star",),
            lazy((n,), np.nan, "float32"),
            {"description": "effective sample size of the importance weights, "
             "(sum w)^2 / sum w^2; NaN if not inferred", "units": ""},
        )  # fmt: skip
    partition = {
        "partition_rows": (layout.rows, "input rows of the partition"),
        "partition_start": (layout.start, "first star index of the partition"),
        "partition_order": (layout.order, "HEALPix order of the partition (-1: file rows)"),
        "partition_pixel": (layout.pixel, "HEALPix pixel (nested) or partition number"),
    }
    for name, (values, text) in partition.items():
        values = np.asarray(values, dtype=np.int64)
        data_vars[name] = (("partition",), values, {"description": text})
    data_vars["partition_done"] = (
        ("partition",),
        np.zeros(layout.n_partitions, dtype=np.uint8),
        {"description": "1 once the partition's rows are completely written"},
    )
    coords = {
        "source_id": (
            "star",
            lazy((n,), -1, "int64"),
            {"description": "source_id of the input row; -1 on padding rows"},
        ),
        "healpix29": (
            "star",
            lazy((n,), -1, "int64"),
            {"description": "HEALPix order-29 nested index of (ra, dec); -1 if unknown"},
        ),
        "param": (
            "param",
            list(params),
            {
                "units": _json({p: PARAM_UNITS.get(p, "") for p in params}),
                "description": _json({p: PARAM_DESCRIPTIONS.get(p, p) for p in params}),
            },
        ),
        "stat": ("stat", list(STATS), {"description": _json(STAT_DESCRIPTIONS)}),
    }
    root = {
        "title": "ysoscale posterior cube",
        "ysoscale_version": __version__,
        "band_list_version": BAND_LIST_VERSION,
        "star_chunk": layout.star_chunk,
        "padding": "rows with flags & PADDING hold no star; ysoscale.infer.open_cube drops them",
        "young_age_myr": young_age_myr,
        **attrs,
    }
    return xr.Dataset(data_vars, coords=coords, attrs=root)


def _exists(path: Path) -> bool:
    return (path / "zarr.json").exists()


def create_or_check(
    path: str | Path,
    layout: Layout,
    params: Sequence[str],
    n_samples: int,
    attrs: Mapping[str, Any],
    weighted: bool = False,
) -> None:
    """Create the empty cube, or check that an existing one belongs to this run.

    ``attrs`` (model card and run configuration as JSON strings, ``estimator``, ``model``,
    ``young_age_myr``) must equal those of an existing cube, and so must its partition
    layout and its variables (a cube written before a variable of :data:`STAR_VARIABLES`
    existed cannot be resumed: its finished partitions lack it).

    Raises
    ------
    ValueError
        If the cube at ``path`` holds another run (resuming would mix two runs), or was
        written by an older ysoscale without some of today's variables.
    """
    path = Path(path)
    if _exists(path):
        with xr.open_zarr(path) as existing:
            wanted = (*STAR_VARIABLES, *(WEIGHT_VARIABLES if weighted else ()))
            missing = [v for v in wanted if v not in existing.variables]
            if missing:
                raise ValueError(
                    f"{path} was written by an older ysoscale without the variable(s) "
                    f"{', '.join(missing)}, so it cannot be resumed; use a new --out or delete "
                    "it to start over"
                )
            for key, value in attrs.items():
                if existing.attrs.get(key) != value:
                    raise ValueError(
                        f"{path} holds a run with another {key}; use a new --out or delete it "
                        "to start over"
                    )
            same = (
                existing.sizes.get("partition") == layout.n_partitions
                and existing.sizes.get("sample") == n_samples
                and list(existing.param.values) == list(params)
                and all(
                    np.array_equal(existing[f"partition_{k}"].values, v)
                    for k, v in (
                        ("rows", layout.rows),
                        ("order", layout.order),
                        ("pixel", layout.pixel),
                        ("start", layout.start),
                    )
                )
            )
        if not same:
            raise ValueError(
                f"{path} was made from another partitioning of the input (its partitions "
                "or row counts differ); use a new --out or delete it to start over"
            )
        return
    dataset = template(layout, params, n_samples, attrs, weighted)
    # lz4 + byte shuffle: several times faster to write than zstd for a little more disk
    fast = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    encoding: dict[str, dict[str, Any]] = {
        name: {"compressors": (fast,)} for name in (*dataset.data_vars, "source_id", "healpix29")
    }
    encoding["partition_done"]["chunks"] = (1,)  # one writer per chunk
    fills = {
        "flags": NOT_WRITTEN,
        "n_bands": 0,
        "condition_pattern": 0,
        "source_id": -1,
        "healpix29": -1,
    }
    for name, fill in fills.items():
        encoding[name]["fill_value"] = fill
    dataset.to_zarr(path, mode="w", compute=False, consolidated=True, encoding=encoding)


def done_partitions(path: str | Path) -> np.ndarray:
    """Indices of the partitions already completely written."""
    return np.flatnonzero(zarr.open_array(str(Path(path) / "partition_done"), mode="r")[:] == 1)


class CubeWriter:
    """Writes whole chunks of one partition's region, then marks the partition done.

    Examples
    --------
    >>> writer = CubeWriter("posteriors.zarr")  # doctest: +SKIP
    >>> writer.write(start, block)              # doctest: +SKIP
    >>> writer.mark_done(index)                 # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.group = zarr.open_group(str(self.path), mode="r+")
        self.chunk = int(self.group.attrs["star_chunk"])

    def write(self, start: int, block: Mapping[str, np.ndarray]) -> None:
        """Write ``block`` (every variable of :data:`STAR_VARIABLES`, and those of
        :data:`WEIGHT_VARIABLES` it holds) at ``start``.

        ``start`` and the block length must be multiples of the chunk length: a write
        never touches a chunk it does not fill.
        """
        n = len(block["flags"])
        assert start % self.chunk == 0 and n % self.chunk == 0, (
            f"write of {n} rows at {start} is not chunk-aligned (chunk {self.chunk})"
        )
        for name in (*STAR_VARIABLES, *(v for v in WEIGHT_VARIABLES if v in block)):
            self.group[name][start : start + n] = block[name]

    def mark_done(self, index: int) -> None:
        self.group["partition_done"][index] = 1


def padded_block(
    n_rows: int,
    chunk: int,
    n_samples: int,
    n_param: int,
    **arrays: np.ndarray,
) -> dict[str, np.ndarray]:
    """Arrays of ``n_rows`` stars extended to a whole number of chunks by padding rows.

    Every variable of :data:`STAR_VARIABLES` must be given except ``p_young``, ``p_disk``
    and ``condition_pattern``, which default to their not-inferred values (NaN, NaN, 0).
    :data:`WEIGHT_VARIABLES` are in the block only if given.

    Examples
    --------
    >>> block = padded_block(3, 4, 2, 1, samples=np.zeros((3, 2, 1)), summary=np.zeros((3, 5, 1)),
    ...     flags=np.zeros(3), n_bands=np.ones(3), source_id=np.arange(3),
    ...     healpix29=np.arange(3))
    >>> block["source_id"].tolist(), int(block["flags"][-1]) == PADDING
    ([0, 1, 2, -1], True)
    """
    size = math.ceil(n_rows / chunk) * chunk
    fills = {
        "samples": ((size, n_samples, n_param), np.nan, np.float32),
        "summary": ((size, len(STATS), n_param), np.nan, np.float32),
        "flags": ((size,), PADDING, np.uint32),
        "n_bands": ((size,), 0, np.int16),
        "p_young": ((size,), np.nan, np.float32),
        "p_disk": ((size,), np.nan, np.float32),
        "condition_pattern": ((size,), 0, np.uint16),
        "source_id": ((size,), -1, np.int64),
        "healpix29": ((size,), -1, np.int64),
        "log_weight": ((size, n_samples), np.nan, np.float32),
        "ess": ((size,), np.nan, np.float32),
    }
    optional = ("p_young", "p_disk", "condition_pattern")
    unknown = set(arrays) - set(fills)
    assert not unknown, f"padded_block: unknown variable(s) {sorted(unknown)}"
    block = {}
    for name, (shape, fill, dtype) in fills.items():
        if name in WEIGHT_VARIABLES and name not in arrays:
            continue
        out = np.full(shape, fill, dtype=dtype)
        if name in arrays or name not in optional:
            out[:n_rows] = arrays[name]
        block[name] = out
    return block


def open_cube(path: str | Path, *, padding: bool = False) -> xr.Dataset:
    """Open a cube lazily; without ``padding``, rows that hold no star are dropped.

    Examples
    --------
    >>> cube = open_cube("out/posteriors.zarr")                 # doctest: +SKIP
    >>> cube.summary.sel(stat="median", param="teff")          # doctest: +SKIP
    """
    cube = xr.open_zarr(path)
    if padding:
        return cube
    keep = (cube.flags.values & np.uint32(PADDING)) == 0
    return cube.isel(star=np.flatnonzero(keep))
