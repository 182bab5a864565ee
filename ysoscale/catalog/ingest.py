"""Survey tables in, one canonical HATS catalog out (``ysoscale ingest``).

:func:`ingest` reads one table per survey (parquet, CSV or FITS files, or pandas frames),
maps native columns to canonical ones with the survey adapters, builds an lsdb catalog
with a margin cache for each, crossmatches every secondary survey to the primary
(:mod:`ysoscale.catalog.crossmatch`) and writes the result as a HATS collection that
``lsdb.open_catalog(out)`` reads. :func:`ingest_canonical` turns a single table that already
has canonical columns into a HATS catalog, without crossmatch.

Two routes build the per-survey catalogs:

- small inputs, frames of at most :data:`SMALL_INPUT_ROWS` rows and files of at most
  :data:`SMALL_INPUT_BYTES` bytes, are read into memory and partitioned by
  ``lsdb.from_dataframe`` (margin cache included);
- larger ones go through the hats-import pipeline (``ImportArguments`` with a reader that
  applies the adapter chunk by chunk, then ``MarginCacheArguments``) on a Dask client, into
  a temporary directory ``OUT/_ingest_tmp`` that is removed at the end.

``importer="lsdb"`` or ``"hats-import"`` forces one route.

The output has one row per primary row, never more and never fewer (checked after
writing): ``source_id``, ``ra``, ``dec``, ``parallax``, ``parallax_error`` (when an input
has them: from the primary, else from the first secondary that does), every
``{band}_mag``/``{band}_mag_err``, and per survey ``{survey}_id``, ``{survey}_quality``,
``{survey}_ra``/``{survey}_dec`` and ``{survey}_match_arcsec`` (secondaries). Secondary
rows that no primary row took as its counterpart are counted in the report and, with
``write_unmatched=True``, written to ``OUT/unmatched/{survey}`` (HATS catalogs).

Examples
--------
>>> import numpy as np, pandas as pd, lsdb, tempfile
>>> gaia = pd.DataFrame({"source_id": [1, 2], "ra": [10.0, 10.5], "dec": [5.0, 5.0],
...     "parallax": [2.0, 1.0], "parallax_error": [0.1, 0.1],
...     "gaia_g_mag": [12.0, 15.0], "gaia_g_mag_err": [0.003, 0.003]})
>>> tmass = pd.DataFrame({"source_id": ["a", "b"], "ra": [10.0001, 20.0],
...     "dec": [5.0, 5.0], "tmass_j_mag": [10.5, 9.0], "tmass_j_mag_err": [0.02, 0.02]})
>>> out = tempfile.mkdtemp() + "/cat"
>>> report = ingest({"gaia": gaia, "tmass": tmass}, out, native=False, progress=False)
>>> report.rows, report.survey("tmass").unmatched_rows
(2, 1)
>>> frame = lsdb.open_catalog(out).compute(progress_bar=False).sort_values("source_id")
>>> frame[["source_id", "tmass_id", "tmass_j_mag"]].values.tolist()
[[1, 'a', 10.5], [2, <NA>, <NA>]]
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lsdb
import pandas as pd
from hats_import.catalog.file_readers import InputReader

from ysoscale.catalog.adapters import ADAPTERS
from ysoscale.catalog.columns import BASE_COLUMNS, bands_in, err_column, mag_column, validate_schema
from ysoscale.catalog.crossmatch import (
    MATCH_SUFFIX,
    count_rows,
    crossmatch_to_primary,
    margin_order_for,
    unmatched_rows,
)
from ysoscale.catalog.readers import (
    FORMATS,
    IMPORT_CHUNK_ROWS,
    SurveyReader,
    csv_delimiter,
    file_format,
    prepare_table,
    read_table,
)

__all__ = [
    "FORMATS",
    "file_format",
    "SMALL_INPUT_BYTES",
    "SMALL_INPUT_ROWS",
    "IngestReport",
    "SurveyStats",
    "ingest",
    "ingest_canonical",
    "read_table",
]

SMALL_INPUT_ROWS = 2_000_000
"""Frames with more rows than this are written to parquet and imported with hats-import."""

SMALL_INPUT_BYTES = 256 * 2**20
"""Files larger than this (bytes) are imported with hats-import instead of read whole."""

TMP_DIR = "_ingest_tmp"
UNMATCHED_DIR = "unmatched"
CANONICAL = "canonical"
Importer = Literal["auto", "lsdb", "hats-import"]
Source = str | Path | pd.DataFrame


@dataclass(frozen=True)
class SurveyStats:
    """What the crossmatch did with one secondary survey.

    Attributes
    ----------
    survey : str
        Survey name.
    input_rows : int
        Rows of its input table.
    matched_rows : int
        Primary rows that have a counterpart in it.
    unmatched_rows : int
        Its rows that no primary row took as nearest counterpart within the radius.
    unmatched_path : str or None
        HATS catalog of those rows (``write_unmatched=True``).
    """

    survey: str
    input_rows: int
    matched_rows: int
    unmatched_rows: int
    unmatched_path: str | None = None

    @property
    def shared_rows(self) -> int:
        """Primary rows whose counterpart is also the counterpart of another primary row."""
        return self.matched_rows - (self.input_rows - self.unmatched_rows)


@dataclass(frozen=True)
class IngestReport:
    """Summary of one :func:`ingest` run (``summary()`` for people, ``to_dict()`` for JSON)."""

    out: str
    primary: str
    rows: int
    bands: tuple[str, ...]
    columns: tuple[str, ...]
    radius_arcsec: float | None
    importers: dict[str, str] = field(default_factory=dict)
    surveys: tuple[SurveyStats, ...] = ()

    def survey(self, name: str) -> SurveyStats:
        """Statistics of secondary survey ``name``."""
        for stats in self.surveys:
            if stats.survey == name:
                return stats
        raise KeyError(f"{name!r} is not a secondary survey of this ingest")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self) | {"surveys": [asdict(s) for s in self.surveys]}

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.out}: {self.rows} rows (one per {self.primary} row), "
            f"{len(self.bands)} bands: {' '.join(self.bands)}"
        ]
        for s in self.surveys:
            lines.append(
                f"  {s.survey}: {s.input_rows} rows, {s.matched_rows} {self.primary} rows "
                f"matched within {self.radius_arcsec:g} arcsec, {s.unmatched_rows} unmatched"
                + (f" (written to {s.unmatched_path})" if s.unmatched_path else "")
                + (f", {s.shared_rows} share a counterpart" if s.shared_rows else "")
            )
        return "\n".join(lines)


# building one survey's catalog ------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Settings of one run, shared by its stages."""

    out: Path
    name: str
    radius_arcsec: float
    partition_rows: int | None
    margin_arcsec: float | None
    write_unmatched: bool
    progress: bool

    @property
    def tmp(self) -> Path:
        return self.out / TMP_DIR


@dataclass
class _Input:
    """One survey's table on its way to a catalog."""

    survey: str
    source: Source
    secondary: bool
    native: bool
    options: Mapping[str, Any]
    route: str = "lsdb"
    frame: pd.DataFrame | None = None  # prepared rows (lsdb route, and large frames)

    @property
    def ra_dec(self) -> tuple[str, str]:
        prefix = f"{self.survey}_" if self.secondary else ""
        return f"{prefix}ra", f"{prefix}dec"

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        return prepare_table(
            frame, self.survey, native=self.native, secondary=self.secondary, options=self.options
        )

    def reader(self) -> SurveyReader:
        fmt = file_format(self.source)
        return SurveyReader(
            fmt,
            self.survey,
            native=self.native,
            secondary=self.secondary,
            options=self.options,
            **({"sep": csv_delimiter(self.source)} if fmt == "csv" else {}),
        )


def _check(item: _Input, importer: Importer) -> None:
    """Choose the route and check the schema; reads small tables (no catalog yet)."""
    source = item.source
    if importer != "auto":
        item.route = importer
    elif isinstance(source, pd.DataFrame):
        item.route = "lsdb" if len(source) <= SMALL_INPUT_ROWS else "hats-import"
    else:
        item.route = "lsdb" if Path(source).stat().st_size <= SMALL_INPUT_BYTES else "hats-import"
    if isinstance(source, pd.DataFrame) or item.route == "lsdb":
        item.frame = item.prepare(
            source if isinstance(source, pd.DataFrame) else read_table(source)
        )
    else:
        item.reader().head(source)


def _from_dataframe(item: _Input, plan: _Plan, margin: bool) -> lsdb.Catalog:
    """``lsdb.from_dataframe``, with a margin cache of coarse pixels when asked for."""
    ra, dec = item.ra_dec
    kwargs = {"catalog_name": item.survey, "ra_column": ra, "dec_column": dec}
    if plan.partition_rows:
        kwargs["partition_rows"] = plan.partition_rows
    catalog = lsdb.from_dataframe(item.frame, margin_threshold=None, **kwargs)
    if not margin:
        return catalog
    highest = catalog.hc_structure.partition_info.get_highest_order()
    order = margin_order_for(highest, plan.margin_arcsec)
    with warnings.catch_warnings():
        # lsdb notes that margin_order overrides the threshold: that is the point
        warnings.simplefilter("ignore", RuntimeWarning)
        return lsdb.from_dataframe(item.frame, margin_order=order, **kwargs)


def _hats_import(item: _Input, plan: _Plan, margin: bool, client) -> lsdb.Catalog:
    """Import a large table with the hats-import pipeline (and its margin cache)."""
    from hats_import import ImportArguments, MarginCacheArguments, pipeline_with_client

    if item.frame is not None:
        parts = plan.tmp / f"{item.survey}_input"
        parts.mkdir(parents=True, exist_ok=True)
        files = []
        for k, start in enumerate(range(0, len(item.frame), IMPORT_CHUNK_ROWS)):
            files.append(parts / f"part-{k:05d}.parquet")
            item.frame.iloc[start : start + IMPORT_CHUNK_ROWS].to_parquet(files[-1], index=False)
        reader: InputReader | str = "parquet"
    else:
        files, reader = [Path(item.source)], item.reader()
    common = {"output_path": plan.tmp, "progress_bar": plan.progress, "resume": False}
    ra, dec = item.ra_dec
    pipeline_with_client(
        ImportArguments(
            output_artifact_name=item.survey,
            input_file_list=files,
            file_reader=reader,
            ra_column=ra,
            dec_column=dec,
            pixel_threshold=plan.partition_rows or 1_000_000,
            tmp_dir=plan.tmp / "work",
            **common,
        ),
        client,
    )
    path = plan.tmp / item.survey
    if not margin:
        return lsdb.open_catalog(path)
    highest = lsdb.open_catalog(path).hc_structure.partition_info.get_highest_order()
    with warnings.catch_warnings():
        # hats-import reads the margin's partitions back before writing their list
        warnings.filterwarnings("ignore", "Computing partitions from catalog parquet files")
        pipeline_with_client(
            MarginCacheArguments(
                input_catalog_path=path,
                output_artifact_name=f"{item.survey}_margin",
                margin_threshold=plan.margin_arcsec,
                # a margin of whole pixels: at least margin_arcsec wide (hats-import 0.11 has
                # no fine filtering), a superset that costs a few rows, never a lost match
                margin_order=margin_order_for(highest, plan.margin_arcsec),
                **common,
            ),
            client,
        )
    return lsdb.open_catalog(path, margin_cache=plan.tmp / f"{item.survey}_margin")


def _build(item: _Input, plan: _Plan, margin: bool, client) -> tuple[lsdb.Catalog, int]:
    """The survey's catalog (margin cache included when asked for) and its row count."""
    _say(plan.progress, f"{item.survey}: building a HATS catalog ({item.route})")
    if item.route == "lsdb":
        return _from_dataframe(item, plan, margin), len(item.frame)
    catalog = _hats_import(item, plan, margin, client)
    return catalog, int(catalog.hc_structure.catalog_info.total_rows)


# orchestration ----------------------------------------------------------------------------


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"ingest: {message}", file=sys.stderr, flush=True)


def _check_inputs(inputs: Mapping[str, Source], primary: str) -> None:
    if not inputs:
        raise ValueError("no inputs: give at least the primary survey's table")
    if primary not in inputs:
        raise ValueError(f"primary survey {primary!r} is not among the inputs {sorted(inputs)}")
    for survey, source in inputs.items():
        if isinstance(source, pd.DataFrame):
            continue
        if not isinstance(source, str | Path):
            raise TypeError(f"{survey}: expected a path or a pandas DataFrame, got {type(source)}")
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{survey}: no such file: {path}")
        file_format(path)


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty output directory, unless told to replace a HATS catalog there."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another path or overwrite=True")
    names = {p.name for p in out.iterdir()}
    if not ({"collection.properties", "hats.properties"} & names or names <= {TMP_DIR}):
        raise FileExistsError(f"{out} holds files that are not a HATS catalog; not deleting")


def _ordered_columns(columns: list[str], surveys: list[str]) -> list[str]:
    """Canonical columns first, then per-survey columns, then anything else."""
    head = [c for c in BASE_COLUMNS if c in columns]
    for band in bands_in(columns):
        head += [mag_column(band), err_column(band)]
    for survey in surveys:
        for suffix in ("_id", "_quality", MATCH_SUFFIX, "_ra", "_dec"):
            if f"{survey}{suffix}" in columns:
                head.append(f"{survey}{suffix}")
    return head + [c for c in columns if c not in head]


def _parallax_from_secondary(catalog: lsdb.Catalog, surveys: list[str]) -> lsdb.Catalog:
    """Canonical parallax from the first secondary that has one, when the primary has none."""
    if "parallax" in catalog.columns:
        return catalog
    for survey in surveys:
        names = {f"{survey}_parallax": "parallax", f"{survey}_parallax_error": "parallax_error"}
        if set(names) <= set(catalog.columns):
            return catalog.rename(names)
    return catalog


@contextlib.contextmanager
def _client_if_needed(client, needed: bool, workers: int | None) -> Iterator[Any]:
    if client is not None:
        with client.as_current():
            yield client
    elif needed:
        from ysoscale.cluster import connect

        with connect(workers=workers) as started:
            yield started
    else:
        yield None


def ingest(
    inputs: Mapping[str, Source],
    out: str | Path,
    *,
    primary: str = "gaia",
    radius_arcsec: float = 1.0,
    native: bool = True,
    partition_rows: int | None = None,
    margin_arcsec: float | None = None,
    adapter_options: Mapping[str, Mapping[str, Any]] | None = None,
    importer: Importer = "auto",
    write_unmatched: bool = False,
    overwrite: bool = False,
    catalog_name: str | None = None,
    client=None,
    workers: int | None = None,
    progress: bool = True,
) -> IngestReport:
    """Crossmatch survey tables to the primary survey and write one canonical HATS catalog.

    Parameters
    ----------
    inputs : mapping of str to path or DataFrame
        Survey name (a key of ``ADAPTERS``: gaia, tmass, wise, ps1, sdss, galex,
        skymapper) to its table: a parquet/CSV/FITS file or a pandas DataFrame.
    out : path
        Output directory, the HATS collection (``lsdb.open_catalog(out)``).
    primary : str
        The survey whose rows define the output: every one of its rows comes out exactly
        once; the others are matched to it.
    radius_arcsec : float
        Crossmatch radius; each primary row gets its nearest counterpart within it.
    native : bool
        Tables have the survey's native columns and go through its adapter
        (``to_canonical``); with False they already have canonical columns.
    partition_rows : int, optional
        Rows per HEALPix partition (default: lsdb's and hats-import's defaults).
    margin_arcsec : float, optional
        Margin cache width, at least (and by default) twice the radius.
    adapter_options : mapping, optional
        Per-survey adapter options, e.g. ``{"gaia": {"parallax_zero_point": True}}``.
    importer : {"auto", "lsdb", "hats-import"}
        How tables become catalogs (see module docs); "auto" by size.
    write_unmatched : bool
        Write each secondary's unmatched rows to ``out/unmatched/{survey}``.
    overwrite : bool
        Replace an existing HATS catalog at ``out``.
    catalog_name : str, optional
        Name of the catalog in the collection (default: the directory's name).
    client : distributed.Client, optional
        Run on this Dask client; without one, lsdb computes with Dask's default
        scheduler and hats-import (large inputs only) gets a LocalCluster from
        :func:`ysoscale.cluster.connect`.
    workers : int, optional
        Workers of that LocalCluster (default: one per core).
    progress : bool
        Report each stage on stderr and show progress bars.

    Returns
    -------
    IngestReport
        Also written to ``out/ingest_report.json``.

    Raises
    ------
    ValueError
        Unknown survey, primary missing, bad radius/margin, rows without a position,
        a column given by two inputs.
    FileNotFoundError
        An input path does not exist.
    ysoscale.catalog.columns.SchemaError
        A table's canonical columns are wrong; names the column(s). Raised before any
        catalog is built or anything is written.
    FileExistsError
        ``out`` is not empty (and ``overwrite`` is False, or it is not a HATS catalog).
    """
    unknown = sorted(set(inputs) - set(ADAPTERS))
    if unknown:
        raise ValueError(f"unknown survey(s) {unknown}; known: {sorted(ADAPTERS)}")
    return _ingest(
        inputs,
        out,
        primary=primary,
        radius_arcsec=radius_arcsec,
        native=native,
        partition_rows=partition_rows,
        margin_arcsec=margin_arcsec,
        adapter_options=adapter_options,
        importer=importer,
        write_unmatched=write_unmatched,
        overwrite=overwrite,
        catalog_name=catalog_name,
        client=client,
        workers=workers,
        progress=progress,
    )


def _ingest(
    inputs: Mapping[str, Source],
    out: str | Path,
    *,
    primary: str,
    radius_arcsec: float = 1.0,
    native: bool,
    partition_rows: int | None,
    margin_arcsec: float | None = None,
    adapter_options: Mapping[str, Mapping[str, Any]] | None = None,
    importer: Importer,
    write_unmatched: bool = False,
    overwrite: bool,
    catalog_name: str | None,
    client,
    workers: int | None,
    progress: bool,
) -> IngestReport:
    _check_inputs(inputs, primary)
    if radius_arcsec <= 0:
        raise ValueError(f"radius_arcsec must be positive, got {radius_arcsec}")
    margin = 2.0 * radius_arcsec if margin_arcsec is None else float(margin_arcsec)
    if margin < 2.0 * radius_arcsec:
        raise ValueError(
            f"margin_arcsec ({margin:g}) must be at least twice the radius "
            f"({2 * radius_arcsec:g}) to match and count every star near a border"
        )
    if importer not in ("auto", "lsdb", "hats-import"):
        raise ValueError(f"importer must be 'auto', 'lsdb' or 'hats-import', not {importer!r}")
    out = Path(out)
    name = catalog_name or out.resolve().name
    if name in (TMP_DIR, UNMATCHED_DIR):
        raise ValueError(f"catalog_name {name!r} is reserved")
    _check_out(out, overwrite)
    options = dict(adapter_options or {})
    order = [primary, *(s for s in inputs if s != primary)]
    items = [_Input(s, inputs[s], s != primary, native, options.get(s, {})) for s in order]
    for item in items:
        _check(item, importer)

    plan = _Plan(out, name, radius_arcsec, partition_rows, margin, write_unmatched, progress)
    if out.exists():
        shutil.rmtree(out)
    plan.tmp.mkdir(parents=True)
    needs_client = any(item.route == "hats-import" for item in items)
    try:
        with _client_if_needed(client, needs_client, workers) as active:
            report = _run(items, plan, active)
    except BaseException:
        shutil.rmtree(plan.tmp, ignore_errors=True)
        raise
    shutil.rmtree(plan.tmp, ignore_errors=True)
    return report


def _run(items: list[_Input], plan: _Plan, client) -> IngestReport:
    primary, secondaries = items[0].survey, [item.survey for item in items[1:]]
    catalogs: dict[str, lsdb.Catalog] = {}
    rows: dict[str, int] = {}
    for item in items:
        catalogs[item.survey], rows[item.survey] = _build(item, plan, bool(secondaries), client)
    if secondaries:
        _say(
            plan.progress,
            f"crossmatching {', '.join(secondaries)} to {primary} "
            f"within {plan.radius_arcsec:g} arcsec",
        )
    matched = crossmatch_to_primary(
        catalogs[primary],
        {s: catalogs[s] for s in secondaries},
        radius_arcsec=plan.radius_arcsec,
    )
    matched = _parallax_from_secondary(matched, secondaries)
    matched = matched[_ordered_columns(list(matched.columns), [primary, *secondaries])]
    bands = validate_schema(dict(matched.dtypes))
    _say(plan.progress, f"writing {plan.out}")
    matched.write_catalog(
        plan.out, catalog_name=plan.name, as_collection=True, progress_bar=plan.progress
    )
    written = lsdb.open_catalog(plan.out)
    total = int(written.hc_structure.catalog_info.total_rows)
    if total != rows[primary]:
        raise RuntimeError(
            f"wrote {total} rows but {primary} has {rows[primary]}: rows were lost or invented"
        )
    stats = tuple(_secondary_stats(catalogs, rows, primary, secondaries, plan))
    report = IngestReport(
        out=str(plan.out),
        primary=primary,
        rows=total,
        bands=bands,
        columns=tuple(written.columns),
        radius_arcsec=plan.radius_arcsec if secondaries else None,
        importers={item.survey: item.route for item in items},
        surveys=stats,
    )
    (plan.out / "ingest_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


def _secondary_stats(
    catalogs: Mapping[str, lsdb.Catalog],
    rows: Mapping[str, int],
    primary: str,
    secondaries: list[str],
    plan: _Plan,
) -> Iterator[SurveyStats]:
    """Matched primary rows (from the written catalog) and unmatched rows per secondary."""
    if not secondaries:
        return
    distances = [f"{s}{MATCH_SUFFIX}" for s in secondaries]
    written = lsdb.open_catalog(plan.out, columns=distances)
    matched = written.to_dask_dataframe()[distances].count().compute()
    for survey in secondaries:
        _say(plan.progress, f"{survey}: counting rows without a {primary} counterpart")
        lost = unmatched_rows(
            catalogs[primary], catalogs[survey], survey, radius_arcsec=plan.radius_arcsec
        )
        path = None
        if plan.write_unmatched:
            path = plan.out / UNMATCHED_DIR / survey
            lost.write_catalog(
                path,
                catalog_name=f"{survey}_unmatched",
                as_collection=False,
                progress_bar=plan.progress,
                error_if_empty=False,
            )
            n_lost = int(lsdb.open_catalog(path).hc_structure.catalog_info.total_rows or 0)
        else:
            n_lost = count_rows(lost)
        yield SurveyStats(
            survey,
            rows[survey],
            int(matched[f"{survey}{MATCH_SUFFIX}"]),
            n_lost,
            str(path) if path else None,
        )


def ingest_canonical(
    source: Source,
    out: str | Path,
    *,
    partition_rows: int | None = None,
    importer: Importer = "auto",
    overwrite: bool = False,
    catalog_name: str | None = None,
    client=None,
    workers: int | None = None,
    progress: bool = True,
) -> IngestReport:
    """Write one table that already has canonical columns as a HATS catalog (no crossmatch).

    Parameters are those of :func:`ingest`; ``source`` is a parquet/CSV/FITS path or a
    DataFrame whose columns pass :func:`~ysoscale.catalog.columns.validate_schema`.

    Examples
    --------
    >>> import tempfile
    >>> frame = pd.DataFrame({"source_id": [7], "ra": [83.8], "dec": [-5.4],
    ...                       "tmass_j_mag": [11.0], "tmass_j_mag_err": [0.03]})
    >>> report = ingest_canonical(frame, tempfile.mkdtemp() + "/orion", progress=False)
    >>> report.rows, report.bands
    (1, ('tmass_j',))
    """
    return _ingest(
        {CANONICAL: source},
        out,
        primary=CANONICAL,
        native=False,
        partition_rows=partition_rows,
        importer=importer,
        overwrite=overwrite,
        catalog_name=catalog_name,
        client=client,
        workers=workers,
        progress=progress,
    )
