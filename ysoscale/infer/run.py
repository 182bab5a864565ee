"""Orchestration of an inference run: input -> one Dask task per partition -> cube + summary.

INPUT is a HATS catalog (opened with lsdb; one task per HEALPix partition, each reading
its own partition from disk) or a parquet/CSV file of canonical columns (read here, split
into partitions of ``partition_rows`` consecutive rows, each sent with its task). Before
anything is computed the schema is checked (:func:`~ysoscale.catalog.columns.validate_schema`)
and the cube is created with every partition's region (:mod:`ysoscale.infer.cube`).

Each task (:func:`run_partition`, the adapter) turns its frame into arrays with
:func:`~ysoscale.catalog.quality.check_rows`, calls the kernel
(:func:`~ysoscale.infer.kernel.infer_arrays`) chunk by chunk on the models its worker
loaded once (:mod:`ysoscale.infer.plugin`), writes its own chunks and only then marks the
partition done. A re-run skips the partitions marked done; a task whose worker died is
re-run by Dask on another worker and rewrites the same chunks with the same values (the
random draws are keyed by ``(seed, source_id)``), so the cube does not depend on faults or
on scheduling. The summary HATS catalog is written once every partition is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ysoscale.catalog.columns import SchemaError, validate_schema
from ysoscale.catalog.quality import RowFlag, check_rows
from ysoscale.infer import cube
from ysoscale.infer.kernel import infer_arrays, output_params
from ysoscale.infer.plugin import ModelPlugin, worker_models
from ysoscale.infer.selection import DetectionSelection
from ysoscale.infer.summary import (
    summary_columns,
    write_frame_summary,
    write_hats_summary,
)
from ysoscale.nn.config import PHYSICAL_PARAMS
from ysoscale.nn.default import DEFAULT_MODEL_DIR, resolve_model
from ysoscale.nn.model_files import read_card
from ysoscale.nn.predictive import DEFAULT_AGE_THRESHOLD_MYR
from ysoscale.nn.recalibration import RECALIBRATION_FILE, QuantileRecalibration
from ysoscale.nn.simformer import config_from_card
from ysoscale.physics.grids import ensure_default_grids
from ysoscale.simulate.surveys import SURVEY_MODELS, SURVEYS
from ysoscale.tasks import TaskTally

CUBE_NAME = "posteriors.zarr"
SUMMARY_NAME = "summary"
FILE_SUFFIXES = (".parquet", ".pq", ".csv")


@dataclass(frozen=True)
class RunSpec:
    """What every partition task needs besides its rows (small; sent with each task)."""

    cube: str
    model_dir: str | None
    device: str
    isochrones: bool
    n_samples: int
    seed: int
    star_chunk: int
    batch_size: int = 4096  # stars per block written (whole chunks)
    model_batch: int | None = None  # stars per model call (None: by device, nn.batching)
    young_age_myr: float = DEFAULT_AGE_THRESHOLD_MYR  # threshold of p_young
    importance: bool = False  # importance-weight the samples (kernel.SampleWeighting)
    detection_surveys: tuple[str, ...] = ()  # with importance: the detection pattern's
    recalibrate: bool = False  # apply the model's recalibration.json (ysoscale recalibrate)


@dataclass(frozen=True)
class Partition:
    """One partition: its index, its region of the cube and a label for messages.

    ``duplicated`` lists the rows (positions in the partition) whose source_id occurs in
    another partition too: :func:`check_rows` only sees its own partition.
    """

    index: int
    start: int
    rows: int
    label: str
    duplicated: tuple[int, ...] = ()


@dataclass
class InputCatalog:
    """An opened input: its columns, its partitioning and how to get each partition."""

    path: Path
    kind: str  # "hats" or "file"
    dtypes: dict[str, Any]
    rows: list[int]
    order: list[int]
    pixel: list[int]
    catalog: Any = None  # lsdb.Catalog of a HATS input
    frame: pd.DataFrame | None = None  # the whole table of a file input
    bounds: list[tuple[int, int]] = field(default_factory=list)  # file rows of each partition
    repeated: np.ndarray | None = None  # file rows whose source_id occurs more than once

    def duplicated(self, index: int) -> tuple[int, ...]:
        """Rows of partition ``index`` whose source_id occurs more than once in the whole
        file. (In a HATS catalog the copies of one source share its position, hence its
        partition, where :func:`check_rows` finds them.)"""
        if self.repeated is None:
            return ()
        first, last = self.bounds[index]
        return tuple(np.flatnonzero(self.repeated[first:last]).tolist())

    def partition_frame(self, index: int) -> pd.DataFrame:
        """Rows of a file partition (HATS partitions are read by their tasks)."""
        assert self.frame is not None, "only file inputs are held in memory"
        first, last = self.bounds[index]
        return self.frame.iloc[first:last]


def _healpix29(frame: pd.DataFrame, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Order-29 index of each row: the HATS index if present, else from (ra, dec); -1 if
    the position is unusable."""
    from hats.pixel_math.spatial_index import SPATIAL_INDEX_COLUMN, compute_spatial_index

    if frame.index.name == SPATIAL_INDEX_COLUMN:
        return frame.index.to_numpy(dtype=np.int64)
    if SPATIAL_INDEX_COLUMN in frame.columns:
        return frame[SPATIAL_INDEX_COLUMN].to_numpy(dtype=np.int64, na_value=-1)
    out = np.full(len(frame), -1, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        ok = (ra >= 0) & (ra <= 360) & (dec >= -90) & (dec <= 90)
    if ok.any():
        out[ok] = compute_spatial_index(ra[ok], dec[ok])
    return out


def run_partition(frame: pd.DataFrame, spec: RunSpec, part: Partition) -> dict[str, Any]:
    """Infer one partition and write its region of the cube; the adapter Dask runs.

    Errors are re-raised with the partition attached.
    """
    try:
        if len(frame) != part.rows:
            raise RuntimeError(
                f"it has {len(frame)} rows but the cube was laid out for {part.rows}; the "
                "input changed since the cube was created (use a new --out)"
            )
        loaded = worker_models(spec.model_dir, spec.device, spec.isochrones, spec.importance)
        check = check_rows(frame, loaded.model.config.bands)
        flags = check.flags.copy()
        flags[list(part.duplicated)] |= np.uint32(RowFlag.DUPLICATE_SOURCE_ID)
        source_id = frame["source_id"].to_numpy(dtype=np.int64, na_value=-1)
        ra = frame["ra"].to_numpy(dtype=np.float64, na_value=np.nan)
        dec = frame["dec"].to_numpy(dtype=np.float64, na_value=np.nan)
        healpix29 = _healpix29(frame, ra, dec)
        writer = cube.CubeWriter(spec.cube)
        n_inferred = 0
        block_rows = spec.star_chunk * max(1, spec.batch_size // spec.star_chunk)
        for first in range(0, part.rows, block_rows):
            rows = slice(first, min(first + block_rows, part.rows))
            weighting = loaded.weighting
            if weighting is not None and spec.detection_surveys:
                weighting = dataclasses.replace(weighting, surveys=spec.detection_surveys)
            out = infer_arrays(
                loaded.model,
                check.mag[rows],
                check.mag_err[rows],
                check.parallax[rows],
                check.parallax_error[rows],
                check.usable[rows],
                spec.n_samples,
                spec.seed,
                loaded.forward,
                source_id=source_id[rows],
                batch_size=spec.model_batch,
                young_age_myr=spec.young_age_myr,
                weighting=weighting,
                position=(ra[rows], dec[rows]),
                recalibration=loaded.recalibration if spec.recalibrate else None,
            )
            n_inferred += int(out["sampled"].sum())
            n = rows.stop - rows.start
            weights = {}
            if spec.importance:
                block_flags = flags[rows]  # a view: flags gets the bit too
                block_flags[out["ood"]] |= np.uint32(cube.LOW_ESS)
                weights = {"log_weight": out["log_weight"], "ess": out["ess"]}
            block = cube.padded_block(
                n,
                spec.star_chunk,
                spec.n_samples,
                out["samples"].shape[-1],
                samples=out["samples"],
                summary=out["summary"],
                flags=flags[rows],
                n_bands=check.n_bands[rows],
                p_young=out["p_young"],
                p_disk=out["p_disk"],
                condition_pattern=out["condition_pattern"],
                source_id=source_id[rows],
                healpix29=healpix29[rows],
                **weights,
            )
            writer.write(part.start + first, block)
        writer.mark_done(part.index)
    except Exception as error:
        raise RuntimeError(f"inference of partition {part.label} failed: {error}") from error
    counts = {name: int(((flags & bit) != 0).sum()) for name, bit in cube.FLAG_BITS.items()}
    return {
        "index": part.index,
        "rows": part.rows,
        "inferred": n_inferred,
        "flags": {name: count for name, count in counts.items() if count},
    }


def _count_rows(path) -> int:
    import pyarrow.dataset as pds

    return pds.dataset(str(path), format="parquet").count_rows()


def open_input(path: str | Path, partition_rows: int) -> InputCatalog:
    """Open INPUT: a HATS catalog directory, or a ``.parquet``/``.csv`` file.

    Raises
    ------
    FileNotFoundError
        If nothing is there.
    ValueError
        If a file has an unknown suffix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.is_dir():
        import hats
        import lsdb
        from hats.io.paths import pixel_catalog_file

        main = path
        if (path / "collection.properties").exists():  # the main catalog, without margins
            main = hats.read_hats(path).main_catalog_dir
        catalog = lsdb.open_catalog(main, columns="all")
        pixels = list(catalog.partitions.healpix_pixels)
        structure = catalog.hc_structure
        suffix = structure.catalog_info.npix_suffix
        rows = [
            _count_rows(pixel_catalog_file(structure.catalog_base_dir, p, npix_suffix=suffix))
            for p in pixels
        ]
        return InputCatalog(
            path=path,
            kind="hats",
            dtypes=dict(catalog.dtypes),
            rows=rows,
            order=[p.order for p in pixels],
            pixel=[p.pixel for p in pixels],
            catalog=catalog,
        )
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(
            f"input {path}: expected a HATS catalog directory or a file ending in "
            f"{', '.join(FILE_SUFFIXES)}"
        )
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    n = len(frame)
    bounds = [(a, min(a + partition_rows, n)) for a in range(0, n, partition_rows)]
    return InputCatalog(
        path=path,
        kind="file",
        dtypes=dict(frame.dtypes),
        rows=[b - a for a, b in bounds],
        order=[-1] * len(bounds),
        pixel=list(range(len(bounds))),
        frame=frame,
        bounds=bounds,
        repeated=_repeated(frame),
    )


def _repeated(frame: pd.DataFrame) -> np.ndarray | None:
    if "source_id" not in frame.columns:
        return None  # the schema check will say so
    ids = frame["source_id"]
    return (ids.duplicated(keep=False) & ids.notna()).to_numpy()


def check_schema(dtypes: dict[str, Any], params: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`validate_schema`, plus what inference needs: an integer ``source_id`` (the
    key of each star's random draws and of the cube) and no input column that the
    summary catalog would overwrite.

    Raises
    ------
    SchemaError
        Naming the offending column(s).
    """
    bands = validate_schema(dtypes)
    if not pd.api.types.is_integer_dtype(pd.api.types.pandas_dtype(dtypes["source_id"])):
        raise SchemaError(
            f"catalog schema: column 'source_id' has dtype {dtypes['source_id']}, not integer",
            ["source_id"],
        )
    clash = [c for c in summary_columns(params) if c in dtypes]
    if clash:
        raise SchemaError(
            f"catalog schema: column(s) {clash} would be overwritten by the summary catalog",
            clash,
        )
    return bands


@dataclass
class InferReport:
    """What one invocation of :func:`infer` did."""

    out_dir: Path
    cube: Path
    summary_catalog: Path
    n_stars: int
    n_partitions: int
    partitions_run: int
    partitions_skipped: int
    n_inferred: int
    seconds: float
    n_rows_run: int
    flag_counts: dict[str, int] = field(default_factory=dict)
    n_unplaced: int = 0
    recalibration: dict | None = None  # run_config's record of the recalibration applied

    @property
    def stars_per_s(self) -> float:
        """Input rows processed per second in this invocation (summary included)."""
        return self.n_rows_run / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """Human-readable account of the run."""
        lines = [
            f"{self.cube}: {self.n_stars:,} stars in {self.n_partitions} partition(s); "
            f"{self.partitions_run} inferred now, {self.partitions_skipped} already done; "
            f"{self.seconds:.1f} s, {self.stars_per_s:,.0f} stars/s",
            f"inferred from their photometry now: {self.n_inferred:,}",
        ]
        lines.append(f"summary catalog: {self.summary_catalog}")
        if self.recalibration is not None:
            lines.append(
                "samples recalibrated per condition pattern by the model's recalibration.json "
                f"(sha256 {self.recalibration['sha256'][:12]}; --no-recalibration: as drawn)"
            )
        if self.n_unplaced:
            lines.append(
                f"{self.n_unplaced:,} row(s) without a usable position: "
                f"{self.out_dir / 'summary_unplaced.parquet'}"
            )
        for name, count in sorted(self.flag_counts.items()):
            lines.append(f"  flagged {name:<20} {count:,}")
        return "\n".join(lines)


def _recalibration_record(model_dir: str | None, apply: bool) -> dict | None:
    """What the run configuration records of the model's recalibration: None when none is
    applied, else its fit (``fitted_on``) and the sha256 of its file, so that a resumed
    run with another recalibration is refused (the cube's attributes differ)."""
    directory = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    recalibration = QuantileRecalibration.load(directory) if apply else None
    if recalibration is None:
        return None
    digest = hashlib.sha256((directory / RECALIBRATION_FILE).read_bytes()).hexdigest()
    return {"sha256": digest, **dict(recalibration.fitted_on)}


def infer(
    input: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    n_samples: int = 64,
    seed: int = 0,
    workers: int | None = None,
    scheduler: str | None = None,
    gpu: bool = False,
    progress: bool = True,
    star_chunk: int = 1024,
    partition_rows: int = 50_000,
    young_age_myr: float = DEFAULT_AGE_THRESHOLD_MYR,
    importance: bool = False,
    recalibrate: bool = True,
) -> InferReport:
    """Posterior samples of every star of ``input`` into ``out_dir``, resuming a partial run.

    Parameters
    ----------
    input : path
        A HATS catalog directory, or a ``.parquet``/``.csv`` file, of canonical columns.
    out_dir : path
        Gets ``posteriors.zarr`` (the cube) and ``summary/`` (a HATS catalog).
    model : path, optional
        Model directory (``PosteriorEstimator.save`` or ``Simformer.save``), or the name
        of a shipped model (``"default"``, ``"atmospheric"``; see
        :data:`ysoscale.nn.default.SHIPPED_MODELS`); default: the shipped default model.
        Workers load it from this path, so it must be visible to them.
    n_samples, seed : int
        Samples per star; the seed of every star's random draws (with its source_id).
    workers : int, optional
        Worker processes of a LocalCluster; ``0`` runs in this process without Dask.
    scheduler : str, optional
        Address of a running Dask scheduler (takes precedence over ``workers``).
    gpu : bool
        Run the models on CUDA: a LocalCUDACluster (one worker per GPU), or this
        process's GPU with ``workers=0``.
    star_chunk : int
        Chunk length of the cube along ``star``; each partition owns whole chunks.
    partition_rows : int
        Rows per partition of a file input (HATS inputs keep their partitions).
    young_age_myr : float
        Age threshold (Myr) of each star's ``p_young`` = P(age < threshold | data), from its
        ``log10_age`` samples (NaN with a model without ``log10_age``). Besides the samples
        the cube gets ``p_young``, ``p_disk`` and ``condition_pattern`` per star and the
        root attributes ``estimator``, ``model`` and ``young_age_myr``
        (:mod:`ysoscale.infer.cube`); the summary catalog gets the same three columns.
    importance : bool
        Importance-weight every star's samples by the forward model's likelihood of its
        photometry and parallax and the default prior
        (:class:`~ysoscale.infer.kernel.SampleWeighting`): the cube gets ``log_weight``
        and ``ess``, the summaries and ``p_young`` are weighted, and stars with too few
        effective samples are flagged ``LOW_ESS``. A simformer then samples from its
        kernel proposal, in its physical parameters (``p_disk`` is NaN: the disk is
        marginalised). The detection pattern of the surveys the catalog has columns of is
        weighed at each star's position. Needs a model of the physical parametrisation.
        Experimental: with few effective samples the weighted quantiles are too narrow
        (README, "Importance weights in the cube").
    recalibrate : bool
        Apply the model's quantile recalibration, if its directory has one (``ysoscale
        recalibrate``, :mod:`ysoscale.nn.recalibration`): every star's samples are moved
        to the recalibrated quantiles of its condition pattern. Never with ``importance``
        (the weights are those of the estimator's own samples). The run configuration
        records the recalibration applied (its fit and the file's hash), or null.

    Returns
    -------
    InferReport

    Raises
    ------
    SchemaError
        Before any compute, naming the column, if the input is not a canonical catalog.
    RuntimeError
        If some partitions failed; the others are saved, and a re-run resumes.

    Examples
    --------
    >>> report = infer("catalog_hats", "out", workers=2)  # doctest: +SKIP
    >>> print(report.summary())                          # doctest: +SKIP
    """
    started = time.perf_counter()
    if n_samples < 1 or star_chunk < 1 or partition_rows < 1:
        raise ValueError("n_samples, star_chunk and partition_rows must be positive")
    young_age_myr = float(young_age_myr)
    if not (young_age_myr > 0 and np.isfinite(young_age_myr)):
        raise ValueError(f"young_age_myr must be a positive number of Myr, got {young_age_myr}")
    out_dir = Path(out_dir)
    if model is not None:
        model = resolve_model(model)  # a shipped model's name, or a directory
    model_dir = None if model is None else str(Path(model).resolve())
    card = read_card(model_dir or DEFAULT_MODEL_DIR)
    config = config_from_card(card)
    source = open_input(input, partition_rows)
    isochrones = all(p in config.params for p in ("log10_mass", "log10_age", "mh"))
    model_params = tuple(config.params)
    if importance:
        lacking = [p for p in PHYSICAL_PARAMS if p not in model_params]
        if lacking:
            raise ValueError(
                f"importance weighting needs a model of the physical parameters "
                f"{list(PHYSICAL_PARAMS)}; {model_dir or 'the default model'} lacks {lacking}"
            )
        if card.get("estimator") == "simformer":  # its kernel proposal leaves has_disk out
            model_params = tuple(p for p in model_params if p != "has_disk")
    params = output_params(model_params, isochrones)
    bands = check_schema(source.dtypes, params)
    used = [b for b in bands if b in config.bands]
    if not used:
        raise SchemaError(
            f"none of the catalog's bands {list(bands)} is known to the model "
            f"({', '.join(config.bands)})",
            [f"{b}_mag" for b in bands],
        )
    detection_surveys: tuple[str, ...] = ()
    if importance:
        # the detection pattern of the surveys the catalog has columns of (and the model
        # bands of), checked here before any worker builds it
        detection_surveys = tuple(s for s in SURVEYS if set(SURVEY_MODELS[s].bands) & set(used))
        DetectionSelection.from_surveys(config.bands, detection_surveys)
    unused = [b for b in bands if b not in config.bands]
    if unused:
        warnings.warn(
            f"bands {unused} are not used: the model was not trained on them", stacklevel=2
        )

    recalibration = _recalibration_record(model_dir, recalibrate and not importance)
    provenance = ensure_default_grids(progress) if isochrones else {}
    layout = cube.Layout(source.rows, source.order, source.pixel, star_chunk)
    run_config = {
        "input": str(source.path.resolve()),
        "input_kind": source.kind,
        "model": model_dir or "default",
        "n_samples": n_samples,
        "seed": seed,
        "star_chunk": star_chunk,
        "bands_used": used,
        "young_age_myr": young_age_myr,
        "importance": importance,
        **({"detection_surveys": list(detection_surveys)} if importance else {}),
        "recalibration": recalibration,
        **({"partition_rows": partition_rows} if source.kind == "file" else {}),
        **provenance,
    }
    attrs = {
        "model_card": json.dumps(card, sort_keys=True),
        "run_config": json.dumps(run_config, sort_keys=True),
        "estimator": str(card.get("estimator", "npe")),
        "model": model_dir or "default",
        "young_age_myr": young_age_myr,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    cube_path = out_dir / CUBE_NAME
    cube.create_or_check(cube_path, layout, params, n_samples, attrs, weighted=importance)

    spec = RunSpec(
        cube=str(cube_path),
        model_dir=model_dir,
        device="cuda" if gpu else "cpu",
        isochrones=isochrones,
        n_samples=n_samples,
        seed=seed,
        star_chunk=star_chunk,
        batch_size=32_768 if gpu else 4096,
        # by device and samples per star (nn.batching): 32,768 stars at 64 samples on a
        # GPU, fewer stars when more samples are asked for, so memory stays the same
        model_batch=None,
        young_age_myr=young_age_myr,
        importance=importance,
        detection_surveys=detection_surveys,
        recalibrate=recalibration is not None,
    )
    done = set(cube.done_partitions(cube_path).tolist())
    starts = layout.start
    parts = [
        Partition(i, int(starts[i]), layout.rows[i], layout.label(i), source.duplicated(i))
        for i in range(layout.n_partitions)
        if i not in done
    ]
    run = _Progress(sum(layout.rows), sum(p.rows for p in parts), progress)
    in_process = workers == 0 and scheduler is None
    if in_process:
        import dask

        with dask.config.set(scheduler="synchronous"):
            frames = source.catalog.to_delayed() if source.kind == "hats" else None
            for part in parts:
                if frames is None:
                    frame = source.partition_frame(part.index)
                else:
                    frame = frames[part.index].compute()
                run.collect(lambda f=frame, p=part: run_partition(f, spec, p))
            run.finish()
            summary = _write_summary(source, cube_path, layout, params, out_dir, run, progress)
    else:
        from ysoscale.cluster import connect

        with connect(workers=workers, scheduler=scheduler, gpu=gpu) as client:
            client.register_plugin(ModelPlugin(model_dir, spec.device, isochrones, importance))
            _run_on_cluster(client, source, spec, parts, run)
            run.finish()
            summary = _write_summary(source, cube_path, layout, params, out_dir, run, progress)
    summary_path, n_unplaced = summary
    report = InferReport(
        out_dir=out_dir,
        cube=cube_path,
        summary_catalog=summary_path,
        n_stars=sum(layout.rows),
        n_partitions=layout.n_partitions,
        partitions_run=len(parts),
        partitions_skipped=len(done),
        n_inferred=run.inferred,
        seconds=time.perf_counter() - started,
        n_rows_run=sum(p.rows for p in parts),
        flag_counts=dict(run.flags),
        n_unplaced=n_unplaced,
        recalibration=recalibration,
    )
    return report


class _Progress(TaskTally):
    """Progress bar over input rows, and the tally of results and failures."""

    def __init__(self, total: int, todo: int, show: bool) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=total - todo, unit="star", unit_scale=True,
                   desc="infer", disable=not show)  # fmt: skip
        super().__init__("partition", bar)
        self.inferred = 0
        self.flags: Counter = Counter()

    def tally(self, result: dict[str, Any]) -> int:
        self.inferred += result["inferred"]
        self.flags.update(result["flags"])
        return result["rows"]


def _run_on_cluster(client, source: InputCatalog, spec: RunSpec, parts, run: _Progress) -> None:
    import dask

    token = uuid.uuid4().hex[:8]
    if source.kind == "hats":
        frames = source.catalog.to_delayed()
        tasks = [
            dask.delayed(run_partition, pure=False)(
                frames[p.index], spec, p, dask_key_name=f"infer-partition-{p.index}-{token}"
            )
            for p in parts
        ]
        futures = client.compute(tasks)
    else:
        # the rows travel with the task, so a task lost with its worker can be re-run
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            futures = [
                client.submit(
                    run_partition,
                    source.partition_frame(p.index),
                    spec,
                    p,
                    key=f"infer-partition-{p.index}-{token}",
                )  # fmt: skip
                for p in parts
            ]
    if futures:
        print(
            f"infer: {len(futures)} partition task(s); dashboard {client.dashboard_link}",
            file=sys.stderr,
        )
    run.gather(futures)


def _write_summary(source, cube_path, layout, params, out_dir, run, progress):
    """Write ``OUT/summary`` once the cube is complete; returns (path, unplaced rows)."""
    out = out_dir / SUMMARY_NAME
    if source.kind == "hats":
        columns = (layout.order, layout.pixel, layout.start, layout.rows)
        regions = {(o, p): (int(s), r) for o, p, s, r in zip(*columns, strict=True)}
        write_hats_summary(source.catalog, cube_path, regions, params, out, progress=progress)
        return out, 0
    return write_frame_summary(
        source.frame, cube_path, layout.start, layout.rows, params, out, progress=progress
    )
