"""The ``ysoscale`` command line: parses arguments and calls the API, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_bands(args: argparse.Namespace) -> int:
    from ysoscale.physics.passbands import BAND_LIST_VERSION, get_bands

    bands = [band.describe() for band in get_bands(args.bands or None)]
    if args.json:
        print(json.dumps({"band_list_version": BAND_LIST_VERSION, "bands": bands}, indent=2))
    else:
        for band in bands:
            print(
                f"{band['id']:<13} {band['survey']:<10} {band['system']:<5} "
                f"{band['pivot_wavelength_aa']:>10.1f} Å  {band['source_package']}"
            )
    return 0


def _cmd_grid_build(args: argparse.Namespace) -> int:
    from ysoscale.cluster import connect
    from ysoscale.physics.isochrones import load_isochrone_grid
    from ysoscale.physics.photometry import (
        PhotometryGridSpec,
        load_photometry_grid,
        photometry_grid_path,
    )

    options = {"law": args.law} | ({"library": args.library} if args.library else {})
    spec = PhotometryGridSpec(**options)
    if args.workers:
        with connect(workers=args.workers) as client:
            grid, built = load_photometry_grid(spec, force=args.force, client=client)
    else:
        grid, built = load_photometry_grid(spec, force=args.force)
    state = "built" if built else "up to date (content hash unchanged)"
    print(f"photometry grid {state}: {photometry_grid_path(spec)}  {dict(grid.sizes)}")
    isochrones = load_isochrone_grid(force=args.force)
    print(f"isochrone grid ready: {dict(isochrones.sizes)}")
    return 0


def _cmd_photometry(args: argparse.Namespace) -> int:
    from ysoscale.physics.forward import ForwardModel
    from ysoscale.physics.passbands import BAND_IDS, validate_band_ids

    bands = validate_band_ids(args.bands) if args.bands else BAND_IDS
    physical = args.mass is not None or args.age_myr is not None
    model = ForwardModel.default(bands=bands, with_isochrones=physical, progress=True)
    disk = {}
    if args.disk_frac is not None:
        disk = {"disk_frac": args.disk_frac, "disk_temp": args.disk_temp}
    if physical:
        if args.mass is None or args.age_myr is None:
            raise SystemExit("--mass and --age-myr go together")
        import math

        result = model.physical(
            math.log10(args.mass),
            math.log10(args.age_myr * 1e6),
            args.mh,
            args.distance,
            args.av,
            args.rv,
            **disk,
        )
    else:
        missing = [n for n in ("teff", "logg", "radius") if getattr(args, n) is None]
        if missing:
            raise SystemExit(f"give --{' --'.join(missing)} (or --mass and --age-myr)")
        result = model.atmospheric(
            args.teff, args.logg, args.mh, args.av, args.rv, args.radius, args.distance, **disk
        )
    out = {
        "magnitudes": {b: round(float(m), 4) for b, m in zip(bands, result.mag[0], strict=True)},
        "valid": bool(result.valid[0]),
        "model_weight": round(float(result.model_weight[0]), 4),
    }
    if physical:
        out["derived"] = {
            "teff": round(float(result.teff[0]), 1),
            "logg": round(float(result.logg[0]), 3),
            "log10_lum": round(float(result.log10_lum[0]), 3),
            "radius": round(float(result.radius[0]), 4),
        }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for band, mag in out["magnitudes"].items():
            print(f"{band:<13} {mag:8.3f}")
        if not out["valid"]:
            print("warning: outside the model grids or on filled grid nodes", file=sys.stderr)
    return 0


def _toml(path: str | None) -> dict:
    """The settings of a TOML file (empty without one)."""
    if not path:
        return {}
    import tomllib

    with open(path, "rb") as handle:
        return tomllib.load(handle)


def _given(args: argparse.Namespace, *keys: str) -> dict:
    """The command-line options among ``keys`` that were given (they override the file)."""
    return {key: getattr(args, key) for key in keys if getattr(args, key) is not None}


def _cmd_simulate(args: argparse.Namespace) -> int:
    from ysoscale.simulate.config import SimulationConfig
    from ysoscale.simulate.run import simulate

    settings = _toml(args.config)
    prior = dict(settings.pop("prior", {})) | _given(args, "population")
    settings |= _given(args, "n", "seed", "chunk_size", "surveys", "require_detection")
    config = SimulationConfig.from_dict(settings | {"prior": prior})
    report = simulate(config, args.out, workers=args.workers, scheduler=args.scheduler)
    print(report.summary())
    return 0


def _cmd_train_svae(args: argparse.Namespace) -> int:
    from ysoscale.nn.svae import SVAEConfig
    from ysoscale.xp.train import XPTrainingConfig, train_svae

    settings = _toml(args.config)
    unknown = sorted(set(settings) - {"svae", "training"})
    if unknown:
        raise ValueError(f"unknown table(s) {unknown} in {args.config}; use [svae], [training]")
    foreign = [
        flag
        for flag, given in (
            ("--time-budget-minutes", args.time_budget_minutes),
            ("--loader-threads", args.loader_threads),
            ("--irisml", args.irisml),
            ("--extend-bands", args.extend_bands),
            ("--from", args.extend_from),
            ("--init-from", args.init_from),
        )
        if given
    ]
    if foreign:
        raise ValueError(f"{', '.join(foreign)}: not options of --model svae")
    training = dict(settings.get("training", {})) | _given(
        args, "device", "epochs", "max_minutes", "batch_size", "learning_rate"
    )
    model = SVAEConfig.from_dict(settings["svae"]) if "svae" in settings else None
    report = train_svae(args.data, args.out, model, XPTrainingConfig.from_dict(training))
    print(report.summary())
    return 0


def _cmd_train_simformer(args: argparse.Namespace) -> int:
    from ysoscale.nn.simformer_config import SimformerConfig
    from ysoscale.train.simformer_trainer import train_simformer
    from ysoscale.train.trainer import TrainingConfig

    if args.irisml or args.extend_bands or args.extend_from or args.init_from:
        raise ValueError(
            "--irisml, --extend-bands, --from and --init-from apply to --model npe only"
        )
    settings = _toml(args.config)
    unknown = sorted(set(settings) - {"estimator", "training"})
    if unknown:
        raise ValueError(
            f"unknown table(s) {unknown} in {args.config}; use [estimator] (SimformerConfig "
            "keys) and [training]"
        )
    training = dict(settings.get("training", {})) | _given(
        args, "device", "epochs", "max_minutes", "time_budget_minutes", "batch_size",
        "learning_rate", "loader_threads",
    )  # fmt: skip
    report = train_simformer(
        args.data,
        args.out,
        SimformerConfig.from_dict(settings.get("estimator", {})),
        TrainingConfig.from_dict(training),
    )
    print(
        f"simformer: {report.epochs_run} epoch(s) in {report.seconds / 60:.1f} min, best "
        f"validation loss {report.best_validation_nll:.4f}; model in {report.out_dir}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.model == "svae":
        if len(args.data) > 1:
            raise ValueError(f"--model {args.model} trains on one --data store, got {args.data}")
        args.data = args.data[0]
    if args.model == "svae":
        return _cmd_train_svae(args)
    if args.model == "simformer":
        return _cmd_train_simformer(args)
    from ysoscale.nn import EstimatorConfig
    from ysoscale.train.trainer import TrainingConfig, train

    settings = _toml(args.config)
    unknown = sorted(set(settings) - {"estimator", "training"})
    if unknown:
        raise ValueError(
            f"unknown table(s) {unknown} in {args.config}; use [estimator], [training]"
        )
    training = dict(settings.get("training", {})) | _given(
        args,
        "device",
        "epochs",
        "max_minutes",
        "time_budget_minutes",
        "batch_size",
        "learning_rate",
        "loader_threads",
    )
    estimator = settings.get("estimator", {})
    if args.irisml:
        estimator = EstimatorConfig.irisml().to_dict() | estimator
    new_bands = tuple(b for b in (args.extend_bands or "").split(",") if b)
    if bool(new_bands) != bool(args.extend_from):
        raise ValueError("--extend-bands and --from go together")
    report = train(
        args.data,
        args.out,
        EstimatorConfig.from_dict(estimator),
        TrainingConfig.from_dict(training),
        extend_from=args.extend_from,
        new_bands=new_bands,
        init_from=args.init_from,
    )
    print(
        f"{report.out_dir}: {report.epochs_run} epoch(s), best validation NLL "
        f"{report.best_validation_nll:.4f}{' (stopped early)' if report.stopped_early else ''}"
    )
    return 0


def _cmd_plot_store(args: argparse.Namespace) -> int:
    from ysoscale.simulate.plots import plot_store

    for path in plot_store(args.store, args.out):
        print(f"wrote {path}")
    return 0


def _cmd_plot_latent(args: argparse.Namespace) -> int:
    from ysoscale.xp.plots import plot_latent_source

    for path in plot_latent_source(args.source, args.out, model_dir=args.model):
        print(f"wrote {path}")
    return 0


def _cmd_ingest_xp(args: argparse.Namespace) -> int:
    from ysoscale.catalog.xp import ingest_xp

    report = ingest_xp(args.inputs, args.out)
    print(f"{report.path}: XP coefficients of {report.n_sources:,} sources, keyed by source_id")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    import contextlib

    from ysoscale.catalog.ingest import ingest, ingest_canonical
    from ysoscale.cluster import connect

    if bool(args.canonical) == bool(args.tables):
        raise ValueError("give SURVEY=PATH tables or --canonical PATH (not both)")
    tables = dict(item.split("=", 1) for item in args.tables if "=" in item)
    if len(tables) != len(args.tables):
        raise ValueError(f"tables are SURVEY=PATH, got {args.tables}")
    common = {"partition_rows": args.partition_rows, "importer": args.importer}
    common |= {"overwrite": args.overwrite, "workers": args.workers}
    with contextlib.ExitStack() as stack:
        if args.scheduler:
            common["client"] = stack.enter_context(connect(scheduler=args.scheduler))
        try:
            if args.canonical:
                report = ingest_canonical(args.canonical, args.out, **common)
            else:
                report = ingest(
                    tables,
                    args.out,
                    primary=args.primary,
                    radius_arcsec=args.radius,
                    margin_arcsec=args.margin,
                    write_unmatched=args.write_unmatched,
                    **common,
                )
        except OSError as error:  # missing input, output in the way: a user error
            raise ValueError(str(error)) from error
    print(report.summary())
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from ysoscale.infer.run import infer

    if args.xp and not args.xp_model:
        raise ValueError("--xp needs --xp-model (train one with `train --model svae`)")
    report = infer(
        args.input,
        args.out,
        model=args.model,
        n_samples=args.samples,
        seed=args.seed,
        workers=args.workers,
        scheduler=args.scheduler,
        gpu=args.gpu,
        importance=args.importance,
        recalibrate=not args.no_recalibration,
        **({} if args.young_age_myr is None else {"young_age_myr": args.young_age_myr}),
    )
    print(report.summary())
    if args.xp:
        from ysoscale.xp.cube import xp_infer

        xp = xp_infer(
            report.cube, args.xp, args.xp_model, workers=args.workers, scheduler=args.scheduler
        )
        print(xp.summary())
    return 0


def _cmd_recalibrate(args: argparse.Namespace) -> int:
    from ysoscale.validate.recalibrate import fit_recalibration

    recalibration = fit_recalibration(
        args.model, args.data, n_stars=args.stars, n_samples=args.samples, seed=args.seed,
        min_stars=args.min_stars,
    )  # fmt: skip
    patterns = sorted(k for k in recalibration.pit_quantiles if k >= 0)
    print(f"recalibration of {args.model} written: {recalibration.fitted_on['pits']} PITs of "
          f"{recalibration.fitted_on['stars']} stars; own maps for condition patterns "
          f"{patterns} (others use the map of all); largest level shift "
          f"{recalibration.worst_shift():.3f}")  # fmt: skip
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ysoscale.demo import run_demo

    result = run_demo(args.out, n_synthetic=args.n, workers=args.workers)
    print(f"demo written to {args.out}: reference_seds.png, "
          + ", ".join(f"{k}/cmd_kiel.png" for k in result["chain"]))  # fmt: skip
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ysoscale.validate import validate

    report = validate(
        args.cube,
        args.out,
        truth=args.truth,
        catalog=args.catalog,
        max_stars=args.max_stars,
        seed=args.seed,
    )
    print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog="ysoscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bands = sub.add_parser("bands", help="list the canonical bands")
    bands.add_argument("--json", action="store_true")
    bands.add_argument("--bands", help="comma-separated subset")
    bands.set_defaults(func=_cmd_bands)

    grid = sub.add_parser("grid", help="model grids")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True)
    build = grid_sub.add_parser("build", help="build the photometry and isochrone grids")
    build.add_argument("--workers", type=int, default=0, help="Dask LocalCluster workers")
    build.add_argument(
        "--library",
        help="SEDFit libraries joined by '+' (default phoenix+kurucz; btsettl is solar-only)",
    )
    build.add_argument("--law", default="G23", help="extinction law: G23, F99 or CCM89")
    build.add_argument("--force", action="store_true", help="rebuild even if current")
    build.set_defaults(func=_cmd_grid_build)

    phot = sub.add_parser("photometry", help="magnitudes of one star")
    phot.add_argument("--teff", type=float, help="K")
    phot.add_argument("--logg", type=float, help="dex (cgs)")
    phot.add_argument("--radius", type=float, help="R_sun")
    phot.add_argument("--mass", type=float, help="M_sun (with --age-myr: physical path)")
    phot.add_argument("--age-myr", type=float, help="Myr")
    phot.add_argument("--mh", type=float, default=0.0, help="[M/H], dex")
    phot.add_argument("--distance", type=float, default=10.0, help="pc")
    phot.add_argument("--av", type=float, default=0.0, help="A_V, mag")
    phot.add_argument("--rv", type=float, default=3.1)
    phot.add_argument("--disk-frac", type=float, help="L_disk / L_star")
    phot.add_argument("--disk-temp", type=float, default=800.0, help="K")
    phot.add_argument("--bands", help="comma-separated band ids (default all)")
    phot.add_argument("--json", action="store_true")
    phot.set_defaults(func=_cmd_photometry)

    sim = sub.add_parser("simulate", help="simulate a training store (Dask, resumable)")
    sim.add_argument("--n", type=int, help="number of stars")
    sim.add_argument("--out", required=True, help="output zarr store")
    sim.add_argument("--seed", type=int, help="master seed (default 0)")
    sim.add_argument("--workers", type=int, help="LocalCluster workers (0: no Dask)")
    sim.add_argument("--scheduler", help="address of a running Dask scheduler")
    sim.add_argument("--chunk-size", dest="chunk_size", type=int, help="stars per task")
    sim.add_argument("--surveys", help="comma-separated: gaia,tmass,wise,ps1,sdss,galex,skymapper")
    sim.add_argument("--population", choices=["all", "field", "young"])
    sim.add_argument(
        "--require-detection",
        dest="require_detection",
        action="store_true",
        default=None,
        help="keep only stars some survey detected (training stores)",
    )
    sim.add_argument("--config", help="TOML file with SimulationConfig keys ([prior] table)")
    sim.set_defaults(func=_cmd_simulate)

    tr = sub.add_parser("train", help="train a posterior estimator on a simulated store")
    tr.add_argument(
        "--model",
        choices=["npe", "svae", "simformer"],
        default="npe",
        help="npe: set-transformer + flow (default); svae: Gaia XP scatter-VAE (--data is "
        "an ingest-xp store); simformer: flow-matching arbitrary-conditional estimator",
    )
    tr.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="training store(s) (ysoscale simulate); npe and simformer read several as one, "
        "e.g. a general store and a magnitude-limited one (training/bright_store.toml)",
    )
    tr.add_argument("--out", required=True, help="model directory (resumed if it exists)")
    tr.add_argument("--config", help="TOML with [estimator] and [training] tables")
    tr.add_argument("--device", choices=["cpu", "cuda"])
    tr.add_argument("--epochs", type=int)
    tr.add_argument(
        "--max-minutes",
        dest="max_minutes",
        type=float,
        help="stop this call after about this long (re-run to resume)",
    )
    tr.add_argument(
        "--time-budget-minutes",
        dest="time_budget_minutes",
        type=float,
        help="total training time across resumes; the schedule anneals to it",
    )
    tr.add_argument("--batch-size", dest="batch_size", type=int)
    tr.add_argument("--learning-rate", dest="learning_rate", type=float)
    tr.add_argument("--loader-threads", dest="loader_threads", type=int)
    tr.add_argument("--irisml", action="store_true", help="the IrisML-size configuration")
    tr.add_argument(
        "--extend-bands",
        dest="extend_bands",
        help="comma-separated bands to add to the model given by --from; only "
        "their embeddings are trained",
    )
    tr.add_argument("--from", dest="extend_from", help="model directory to extend")
    tr.add_argument(
        "--init-from",
        dest="init_from",
        help="start a new run from this model's weights where names and shapes match "
        "(e.g. the same architecture with another parallax_encoding)",
    )
    tr.set_defaults(func=_cmd_train)

    plot = sub.add_parser("plot", help="plots")
    plot_sub = plot.add_subparsers(dest="plot_command", required=True)
    plot_store = plot_sub.add_parser("store", help="Gaia CMD, Kiel diagram, band coverage")
    plot_store.add_argument("store")
    plot_store.add_argument("--out", default="store_plots")
    plot_store.set_defaults(func=_cmd_plot_store)
    plot_latent = plot_sub.add_parser(
        "latent", help="XP latent projections by population (and posterior medians)"
    )
    plot_latent.add_argument(
        "source", help="posterior cube written with infer --xp, or an ingest-xp store"
    )
    plot_latent.add_argument("--model", help="sVAE model directory (for an XP store)")
    plot_latent.add_argument("--out", default="latent_plots")
    plot_latent.set_defaults(func=_cmd_plot_latent)

    xp = sub.add_parser("ingest-xp", help="Gaia XP coefficient files -> zarr keyed by source_id")
    xp.add_argument("inputs", nargs="+", help="FITS/VOTable/parquet files (Gaia DR3 xp_continuous)")
    xp.add_argument("--out", required=True, help="output zarr store")
    xp.set_defaults(func=_cmd_ingest_xp)

    ing = sub.add_parser("ingest", help="survey tables -> one crossmatched canonical HATS catalog")
    ing.add_argument("tables", nargs="*", help="SURVEY=PATH (parquet, CSV or FITS; native columns)")
    ing.add_argument("--out", required=True, help="output HATS catalog directory")
    ing.add_argument("--canonical", help="one table of canonical columns instead (no crossmatch)")
    ing.add_argument("--primary", default="gaia", help="survey every output row comes from")
    ing.add_argument("--radius", type=float, default=1.0, help="crossmatch radius, arcsec")
    ing.add_argument("--margin", type=float, help="margin cache, arcsec (default 2 x radius)")
    ing.add_argument("--partition-rows", dest="partition_rows", type=int, help="rows/partition")
    ing.add_argument("--importer", choices=["auto", "lsdb", "hats-import"], default="auto")
    ing.add_argument(
        "--write-unmatched",
        dest="write_unmatched",
        action="store_true",
        help="write secondary rows without a primary counterpart to OUT/unmatched/SURVEY",
    )
    ing.add_argument("--overwrite", action="store_true", help="replace an existing catalog")
    ing_where = ing.add_mutually_exclusive_group()
    ing_where.add_argument("--workers", type=int, help="LocalCluster workers for hats-import")
    ing_where.add_argument("--scheduler", help="address of a running Dask scheduler")
    ing.set_defaults(func=_cmd_ingest)

    inf = sub.add_parser("infer", help="posterior cube + summary catalog of a catalog (Dask)")
    inf.add_argument("input", help="HATS catalog directory, or parquet/CSV of canonical columns")
    inf.add_argument("--out", required=True, help="output directory (resumed if it exists)")
    inf.add_argument(
        "--model",
        help="model directory, or a shipped model: 'default' (physical parameters, ages) "
        "or 'atmospheric' (Teff, log g, [M/H] directly; better for giants and field stars)",
    )
    inf.add_argument("--samples", type=int, default=64, help="posterior samples per star")
    inf.add_argument("--seed", type=int, default=0, help="seed of every star's draws")
    where = inf.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="LocalCluster workers (0: no Dask)")
    where.add_argument("--scheduler", help="address of a running Dask scheduler")
    inf.add_argument("--gpu", action="store_true", help="models on CUDA (LocalCUDACluster)")
    inf.add_argument(
        "--young-age-myr",
        dest="young_age_myr",
        type=float,
        metavar="MYR",
        help="age threshold of p_young = P(age < threshold | data) in the cube and summary "
        "(default: ysoscale.nn.predictive.DEFAULT_AGE_THRESHOLD_MYR, 10 Myr)",
    )
    inf.add_argument(
        "--importance",
        action="store_true",
        help="experimental: importance-weight the samples by the forward model's likelihood "
        "of the photometry, parallax and detection pattern and the prior (log_weight, ess in "
        "the cube; weighted summaries; LOW_ESS flag). With few effective samples the "
        "weighted intervals are too narrow (README, 'Importance weights in the cube')",
    )
    inf.add_argument(
        "--no-recalibration",
        dest="no_recalibration",
        action="store_true",
        help="leave the samples as the estimator drew them, even if the model directory has "
        "a recalibration.json (`ysoscale recalibrate`)",
    )
    inf.add_argument(
        "--xp",
        metavar="XP_STORE",
        help="ingest-xp store: also write xp_latent, xp_chi2_dof, xp_anomaly, xp_population",
    )
    inf.add_argument("--xp-model", dest="xp_model", help="sVAE model directory (with --xp)")
    inf.set_defaults(func=_cmd_infer)

    recal = sub.add_parser(
        "recalibrate",
        help="fit a model's quantile recalibration on held-out simulated stars (written into "
        "the model directory; `infer` applies it)",
    )
    recal.add_argument("--model", required=True, help="model directory")
    recal.add_argument("--data", required=True,
                       help="simulated store the model was not trained on")  # fmt: skip
    recal.add_argument("--stars", type=int, default=12_000, help="stars read from the store")
    recal.add_argument("--samples", type=int, default=32, help="posterior samples per star")
    recal.add_argument("--seed", type=int, default=0, help="seed of the draws")
    recal.add_argument("--min-stars", dest="min_stars", type=int, default=2000,
                       help="PITs a condition pattern needs for a map of its own")  # fmt: skip
    recal.set_defaults(func=_cmd_recalibrate)

    deploy = sub.add_parser(
        "deploy",
        help="SLURM job scripts and clusters, Kubernetes manifests, TLS certificates "
        "(deploy/README.md; needs the deploy extra)",
        add_help=False,
    )
    deploy.add_argument("deploy_args", nargs=argparse.REMAINDER)  # handled in main()

    demo = sub.add_parser("demo", help="the main job on the embedded default")
    demo.add_argument("--out", default="ysoscale_demo", help="output directory")
    demo.add_argument("--n", type=int, default=2000, help="stars in the synthetic catalog")
    demo.add_argument("--workers", type=int, default=2, help="LocalCluster workers (0: no Dask)")
    demo.set_defaults(func=_cmd_demo)

    val = sub.add_parser("validate", help="HTML report: calibration, accuracy, diagrams")
    val.add_argument("--cube", required=True, help="posterior cube (OUT/posteriors.zarr)")
    val.add_argument("--truth", help="table or HATS catalog: source_id + true_<param> columns")
    val.add_argument("--out", required=True, help="report directory (index.html, PNGs)")
    val.add_argument(
        "--catalog",
        help="canonical columns for CMD, sky map, survey combinations (default: the "
        "truth table's, else the summary catalog beside the cube)",
    )
    val.add_argument("--max-stars", dest="max_stars", type=int, default=200_000,
                     help="a random subset of larger cubes")  # fmt: skip
    val.add_argument("--seed", type=int, default=0, help="seed of the subset and of TARP")
    val.set_defaults(func=_cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ysoscale`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["deploy"]:  # its own parser (argparse would eat "--help" and options)
        from ysoscale.deploy.__main__ import main as deploy_main

        return deploy_main(argv[1:], prog="ysoscale deploy")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as error:
        print(f"ysoscale: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
