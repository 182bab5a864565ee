"""The flow-matching simformer beside the set-transformer estimator, trained on one store.

Trains, in this process and on the same training store, the set-transformer + flow
estimator (:func:`ysoscale.train.trainer.train`) and two simformers
(:func:`ysoscale.train.simformer_trainer.train_simformer`), without and with the physics
guidance term. Then, on held-out simulated stars, for four condition patterns (Gaia only;
Gaia + parallax; Gaia + 2MASS + parallax; all the models' bands + parallax):

* coverage of central credible intervals at 10 levels for every parameter (the largest
  |empirical - nominal| per parameter, and over all parameters);
* MAD of the posterior median against the truth per parameter;
* ROC AUC of p_young = P(age < 10 Myr | data) for the true age < 10 Myr (both estimators),
  and of p_disk for the true disk (simformer), and (all bands) of the largest
  infrared-excess score against the photospheric prediction;
* guidance ablation: the physics residual median |m_fwd(theta) - m| of posterior samples,
  against the observed magnitudes (disk-free stars, all-bands pattern) and, from joint
  samples, against the simformer's own predicted magnitudes of unobserved bands;
* in the parallax patterns, the coverage error of log10_distance per parallax S/N bin
  (<5, 5-20, 20-100, >100), where a too-wide or too-narrow peak shows first.

Prints markdown tables; the last line is one JSON object with the headline figures and the
simformer / set-transformer ratios.

    python benchmarks/simformer.py [--store TRAIN.zarr] [--heldout TEST.zarr]
        [--n-train 20000] [--n-test 5000] [--minutes 3] [--samples 32] [--steps 4]
        [--surveys gaia,tmass,wise] [--guidance-weight 0.2] [--attention cached_context]
        [--out DIR] [--quick]

Without ``--store`` / ``--heldout`` the stores are simulated (seeds 5 and 6) into ``--out``.
The Done-when scale of issue 6 is ``--n-train 1000000 --n-test 100000`` with longer
training (``--minutes``) on a bigger machine.

With ``--simformer DIR`` nothing is trained: the given simformer (and ``--simformer-guided
DIR`` if given, and each ``--also NAME=DIR``, labelled NAME) is scored beside the
set-transformer ``--npe`` (a directory or a shipped model name; default: the shipped
default model) on the held-out stars, in the simformer's bands (the set-transformer sees
those of them it knows):

    python benchmarks/simformer.py --simformer MODEL [--also before=OLD_MODEL]
        --heldout TEST.zarr [--heldout MORE.zarr] --n-test 100000 [--patterns gaia,gaia+plx]

A model directory with a ``recalibration.json`` (``ysoscale recalibrate``) is also scored
as NAME+recal: its samples moved by the recalibration of each star's condition pattern,
as ``ysoscale infer`` moves them. Fit it on another store than ``--heldout``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ysoscale.infer.kernel import condition_pattern
from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.nn.default import resolve_model
from ysoscale.nn.predictive import p_disk, p_young, roc_auc
from ysoscale.nn.recalibration import QuantileRecalibration
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.simulate.surveys import SURVEY_MODELS
from ysoscale.train.simformer_trainer import guidance_forward_model, train_simformer
from ysoscale.train.trainer import TrainingConfig, train
from ysoscale.validate import coverage_error
from ysoscale.validate.data import YOUNG_LOG10_AGE
from ysoscale.validate.heldout import CONDITION_VIEWS, held_out_stars, survey_view

PARAMS = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv")
PATTERNS = CONDITION_VIEWS


def simulate_store(path: Path, n: int, seed: int, chunk: int) -> None:
    from ysoscale.simulate.config import SimulationConfig
    from ysoscale.simulate.run import simulate

    config = SimulationConfig(n=n, seed=seed, chunk_size=chunk, require_detection=True)
    simulate(config, path, workers=0, progress=False)


held_out, restrict = held_out_stars, survey_view  # the names other benchmarks import


def held_out_pooled(stores: list[Path], bands, params, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` stars of ``stores`` in turn: those of the first, then of the next."""
    parts: list[dict] = []
    for store in stores:
        got = sum(len(p["theta"]) for p in parts)
        if got < n:
            parts.append(held_out_stars(store, bands, params, n - got))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def physics_residual(forward, theta: np.ndarray, params, mag: np.ndarray, use: np.ndarray):
    """Median |m_fwd(theta) - mag| over stars, samples and bands where ``use``.

    ``theta`` (n, s, p) samples, ``mag`` (n, s, band) or (n, band) references.
    """
    n, s, _ = theta.shape
    flat = torch.from_numpy(theta.reshape(n * s, -1).astype(np.float32))
    index = {p: i for i, p in enumerate(params)}
    with torch.no_grad():
        fwd = forward.physical(
            flat[:, index["log10_mass"]], flat[:, index["log10_age"]], flat[:, index["mh"]],
            10.0 ** flat[:, index["log10_distance"]], flat[:, index["av"]], flat[:, index["rv"]],
        )  # fmt: skip
    m_fwd = fwd.mag.numpy().reshape(n, s, -1)
    ref = mag if mag.ndim == 3 else np.broadcast_to(mag[:, None, :], m_fwd.shape)
    use = np.broadcast_to(use if use.ndim == 3 else use[:, None, :], m_fwd.shape)
    good = use & np.isfinite(m_fwd) & np.isfinite(ref)
    return float(np.median(np.abs(m_fwd - ref)[good])) if good.any() else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="training store (default: simulate --n-train stars)")
    parser.add_argument(
        "--heldout",
        action="append",
        help="held-out store (default: simulate --n-test stars); repeat it to take the stars "
        "of the next store after the first runs out",
    )
    parser.add_argument(
        "--patterns",
        default=",".join(CONDITION_VIEWS),
        help="condition patterns to score, comma-separated (split a long run between "
        "processes; the physics residuals need all+plx)",
    )
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--n-test", type=int, default=5_000, help="held-out stars evaluated")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time per model")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=32, help="posterior samples per star")
    parser.add_argument("--steps", type=int, default=4, help="ODE steps of the simformer")
    parser.add_argument("--solver", default="heun", choices=["euler", "heun", "rk4"])
    parser.add_argument("--surveys", default="gaia,tmass,wise", help="surveys of the bands")
    parser.add_argument("--guidance-weight", type=float, default=0.2, help="w_R of the ablation")
    parser.add_argument(
        "--attention",
        default="cached_context",
        choices=["full", "cached_context"],
        help="attention mode of both simformers (SimformerConfig.attention)",
    )
    parser.add_argument("--joint-stars", type=int, default=200, help="stars of joint sampling")
    parser.add_argument("--simformer", help="score this trained simformer (no training)")
    parser.add_argument("--simformer-guided", help="and this one, as the guided simformer")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="score this simformer too, labelled NAME (repeatable)",
    )
    parser.add_argument("--npe", help="set-transformer beside --simformer (default: shipped)")
    parser.add_argument(
        "--conditional",
        action="store_true",
        help="also coverage per bin of each star's p_young, taken from a second, independent "
        "draw of samples (doubles the sampling time)",
    )
    parser.add_argument("--out", help="work directory (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, well under a minute")
    args = parser.parse_args(argv)
    args.patterns = tuple(args.patterns.split(","))
    unknown = sorted(set(args.patterns) - set(CONDITION_VIEWS))
    if unknown:
        parser.error(f"--patterns: unknown {unknown}; known: {list(CONDITION_VIEWS)}")
    if args.quick:
        args.n_train, args.n_test, args.minutes = 2000, 150, 0.08
        args.samples, args.steps, args.joint_stars, args.batch_size = 16, 2, 40, 256
    if (args.simformer_guided or args.also) and not args.simformer:
        parser.error("--simformer-guided and --also need --simformer")
    also = {}
    for item in args.also:
        name, _, path = item.partition("=")
        if not name.isidentifier() or not path or name in ("npe", "simformer", "simformer_guided"):
            parser.error(f"--also takes NAME=DIR with a new identifier NAME, got {item!r}")
        also[name] = path
    args.also = also
    torch.set_num_threads(1)
    # the temporary directory is removed at the end: pass --out to keep stores and models
    with tempfile.TemporaryDirectory(prefix="simformer_") as temporary:
        work = Path(args.out or temporary)
        work.mkdir(parents=True, exist_ok=True)
        _run(args, work)


def _run(args: argparse.Namespace, work: Path) -> None:
    """Score (training first unless ``--simformer``) with stores and models under ``work``."""
    started = time.perf_counter()
    store = Path(args.store) if args.store else work / "train.zarr"
    heldout = [Path(h) for h in args.heldout] if args.heldout else [work / "heldout.zarr"]
    chunk = max(500, args.n_train // 10)
    if not args.store and not store.exists() and not args.simformer:
        simulate_store(store, args.n_train, seed=5, chunk=chunk)
    if not args.heldout and not heldout[0].exists():
        simulate_store(heldout[0], args.n_test, seed=6, chunk=max(500, args.n_test // 4))

    timings: dict[str, float] = {}
    recalibrations: dict[str, QuantileRecalibration] = {}
    if args.simformer:
        npe, simformers, recalibrations = _pretrained(args)
        bands = simformers["simformer"].config.bands
    else:
        surveys = tuple(args.surveys.split(","))
        bands = tuple(b for s in surveys for b in SURVEY_MODELS[s].bands)
        npe, simformers = _train_models(store, work, bands, args, timings)
    forward = guidance_forward_model(SimformerConfig(bands=bands), torch.device("cpu"))
    npe_columns = [bands.index(b) if b in bands else -1 for b in npe.config.bands]
    npe_params = [npe.config.params.index(p) for p in PARAMS]

    def npe_view(values: np.ndarray) -> np.ndarray:
        """Magnitude columns ``bands`` -> the set-transformer's band order (NaN: absent)."""
        padded = np.concatenate([values, np.full((len(values), 1), np.nan, values.dtype)], 1)
        return padded[:, npe_columns]

    sf_params = simformers["simformer"].config.params
    data = held_out_pooled(heldout, bands, sf_params, args.n_test)
    truth_all = data["theta"][:, [sf_params.index(p) for p in PARAMS]]
    young_all = data["theta"][:, sf_params.index("log10_age")] < YOUNG_LOG10_AGE
    disk_all = data["theta"][:, sf_params.index("has_disk")] > 0.5
    results: dict = {}
    for pattern, (pattern_surveys, plx) in PATTERNS.items():
        if pattern not in args.patterns:
            continue
        rows, mag, err, parallax, parallax_error = restrict(data, bands, pattern_surveys, plx)
        # both models score the same stars: those the set-transformer sees a band of
        seen = np.isfinite(npe_view(mag)).any(axis=1)
        rows[np.flatnonzero(rows)[~seen]] = False
        mag, err, parallax, parallax_error = (a[seen] for a in (mag, err, parallax,
                                                                parallax_error))  # fmt: skip
        truth, young = truth_all[rows], young_all[rows]
        entry = {"n_stars": int(rows.sum())}
        torch.manual_seed(0)
        t0 = time.perf_counter()
        samples, _ = npe.sample(npe_view(mag), npe_view(err), parallax, parallax_error,
                                n_samples=args.samples)  # fmt: skip
        entry["npe_sample_s"] = time.perf_counter() - t0
        samples = samples.numpy()[..., npe_params]
        binning = None
        if args.conditional:  # p_young of independent draws (see coverage_by_p_young)
            torch.manual_seed(2)
            again, _ = npe.sample(npe_view(mag), npe_view(err), parallax, parallax_error,
                                  n_samples=args.samples)  # fmt: skip
            binning = p_young(again.numpy()[..., npe.config.params.index("log10_age")])
        entry["npe"] = _scores(samples, truth, young, PARAMS, None, None, binning)
        if plx:
            entry["npe"]["distance_by_snr"] = distance_by_snr(samples, truth, parallax,
                                                              parallax_error)  # fmt: skip
        for name, model in simformers.items():
            torch.manual_seed(0)
            t0 = time.perf_counter()
            s, _ = model.sample(mag, err, parallax, parallax_error, n_samples=args.samples)
            entry[f"{name}_sample_s"] = time.perf_counter() - t0
            s = s.numpy()
            picked = s[..., [sf_params.index(p) for p in PARAMS]]
            again = binning = None
            if args.conditional:
                torch.manual_seed(2)
                again = model.sample(mag, err, parallax, parallax_error,
                                     n_samples=args.samples)[0].numpy()  # fmt: skip
                binning = p_young(again[..., sf_params.index("log10_age")])
            entry[name] = _scores(picked, truth, young, PARAMS,
                                  s[..., sf_params.index("has_disk")], disk_all[rows],
                                  binning)  # fmt: skip
            if plx:
                entry[name]["distance_by_snr"] = distance_by_snr(picked, truth, parallax,
                                                                 parallax_error)  # fmt: skip
            if name in recalibrations:
                # what the kernel does to these samples (infer_arrays, recalibration=)
                pattern_bits = condition_pattern(mag, err, parallax, parallax_error,
                                                 model.config.bands)  # fmt: skip
                t0 = time.perf_counter()
                moved = recalibrations[name].apply(s, pattern_bits, sf_params)
                entry[f"{name}+recal_s"] = time.perf_counter() - t0
                recal = moved[..., [sf_params.index(p) for p in PARAMS]]
                if again is not None:
                    moved_again = recalibrations[name].apply(again, pattern_bits, sf_params)
                    binning = p_young(moved_again[..., sf_params.index("log10_age")])
                entry[f"{name}+recal"] = _scores(recal, truth, young, PARAMS,
                                                 s[..., sf_params.index("has_disk")],
                                                 disk_all[rows], binning)  # fmt: skip
                if plx:
                    entry[f"{name}+recal"]["distance_by_snr"] = distance_by_snr(
                        recal, truth, parallax, parallax_error)  # fmt: skip
                if pattern == "all+plx":
                    use = np.isfinite(mag) & ~disk_all[rows][:, None]
                    entry[f"{name}+recal"]["residual_observed"] = physics_residual(
                        forward, recal, PARAMS, mag, use)  # fmt: skip
            if pattern == "all+plx":
                use = np.isfinite(mag) & ~disk_all[rows][:, None]
                entry[name]["residual_observed"] = physics_residual(
                    forward, picked, PARAMS, mag, use
                )
                n_joint = min(args.joint_stars, len(mag))
                torch.manual_seed(1)
                first = slice(0, n_joint)
                joint = model.sample_joint(
                    mag[first], err[first], parallax[first], parallax_error[first],
                    n_samples=args.samples,
                )  # fmt: skip
                theta = joint["params"].numpy()[..., [sf_params.index(p) for p in PARAMS]]
                predicted = ~joint["band_observed"].numpy() & ~disk_all[rows][:n_joint, None]
                entry[name]["residual_predicted"] = physics_residual(
                    forward, theta, PARAMS, joint["bands"].numpy(), predicted
                )
                yso = model.yso_products(
                    mag[first], err[first], parallax[first], parallax_error[first],
                    n_samples=args.samples, samples=torch.from_numpy(s[first]),
                )  # fmt: skip
                excess = yso["excess"].nan_to_num(nan=-np.inf).max(dim=1).values.numpy()
                excess[~np.isfinite(excess)] = np.nan
                entry[name]["auc_excess"] = roc_auc(excess, disk_all[rows][first])
                entry[name]["n_excess"] = int(np.isfinite(excess).sum())
        if pattern == "all+plx":
            use = np.isfinite(mag) & ~disk_all[rows][:, None]
            entry["npe"]["residual_observed"] = physics_residual(forward, samples, PARAMS, mag, use)
        results[pattern] = entry
    scored = (
        "npe",
        *(
            m
            for name in simformers
            for m in (name, *([f"{name}+recal"] if name in recalibrations else []))
        ),
    )
    _print_tables(results, args, timings, scored)
    summary = _summary(results, timings, args, time.perf_counter() - started, scored)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in summary.items()}  # fmt: skip
    print(json.dumps(clean))


def _train_models(store: Path, work: Path, bands: tuple[str, ...], args, timings: dict):
    """Train the set-transformer and the two simformers on ``store`` for ``args.minutes``."""
    training = TrainingConfig(epochs=1000, batch_size=args.batch_size, learning_rate=1e-3,
                              warmup_steps=50, patience=1000,
                              time_budget_minutes=args.minutes, seed=0)  # fmt: skip
    t0 = time.perf_counter()
    train(store, work / "npe", EstimatorConfig(bands=bands), training, progress=False)
    timings["npe_train_s"] = time.perf_counter() - t0
    npe = PosteriorEstimator.load(work / "npe").eval()
    forward = guidance_forward_model(SimformerConfig(bands=bands), torch.device("cpu"))
    small = dict(bands=bands, width=64, depth=3, heads=4, ff=128, default_solver=args.solver,
                 default_steps=args.steps, attention=args.attention)  # fmt: skip
    simformers = {}
    for name, weight in (("simformer", 0.0), ("simformer_guided", args.guidance_weight)):
        t0 = time.perf_counter()
        train_simformer(store, work / name, SimformerConfig(**small, w_r=weight), training,
                        forward_model=forward if weight > 0 else None, progress=False)  # fmt: skip
        timings[f"{name}_train_s"] = time.perf_counter() - t0
        simformers[name] = Simformer.load(work / name).eval()
    return npe, simformers


def _pretrained(args) -> tuple[PosteriorEstimator, dict[str, Simformer], dict]:
    """The models named by ``--npe``, ``--simformer`` and ``--simformer-guided``, and the
    recalibrations saved with them (``ysoscale recalibrate``), scored as NAME+recal."""
    npe = PosteriorEstimator.load(resolve_model(args.npe)).eval()
    simformers = {"simformer": Simformer.load(args.simformer).eval()}
    if args.simformer_guided:
        simformers["simformer_guided"] = Simformer.load(args.simformer_guided).eval()
    for name, path in args.also.items():  # parsed in main
        simformers[name] = Simformer.load(path).eval()
    missing = [p for p in PARAMS if p not in npe.config.params]
    for model in simformers.values():
        missing += [p for p in (*PARAMS, "has_disk") if p not in model.config.params]
    if missing:
        raise SystemExit(f"the models lack the parameters {sorted(set(missing))}")
    for model in simformers.values():
        model.config = dataclasses.replace(model.config, default_solver=args.solver,
                                           default_steps=args.steps)  # fmt: skip
    paths = {"simformer": args.simformer, "simformer_guided": args.simformer_guided, **args.also}
    recalibrations = {name: QuantileRecalibration.load(paths[name]) for name in simformers}
    return npe, simformers, {k: v for k, v in recalibrations.items() if v is not None}


SNR_BINS = {"<5": (-np.inf, 5.0), "5-20": (5.0, 20.0), "20-100": (20.0, 100.0),
            ">100": (100.0, np.inf)}  # fmt: skip
"""Parallax S/N bins of the distance coverage table."""


P_YOUNG_BINS = {"<0.1": (0.0, 0.1), "0.1-0.5": (0.1, 0.5), "0.5-0.9": (0.5, 0.9),
                ">=0.9": (0.9, 1.01)}  # fmt: skip
"""Bins of the star's own p_young for the conditional coverage check."""


def coverage_by_p_young(samples, truth, probability) -> dict[str, tuple[int, float, float]]:
    """``{bin: (stars, worst coverage error, log10_age's)}`` per :data:`P_YOUNG_BINS` bin.

    A calibrated posterior is calibrated given the data, hence given anything computed from
    them alone, such as a p_young from draws independent of ``samples`` (``probability``):
    this checks calibration where the young-star census draws its line. Binned by the
    *true* age it would not be (a calibrated posterior pulls the truths of the youngest
    stars towards the prior's older ages, so those sit low in their posteriors by
    construction), nor by the p_young of ``samples`` themselves (a bin of high p_young
    picks sample sets that happened to come out young, with the truth above them).
    """
    out = {}
    for label, (lo, hi) in P_YOUNG_BINS.items():
        pick = (probability >= lo) & (probability < hi)
        if pick.sum() == 0:
            out[label] = (0, float("nan"), float("nan"))
            continue
        cov = coverage_error(samples[pick], truth[pick])
        out[label] = (int(pick.sum()), round(float(np.nanmax(cov)), 4),
                      round(float(cov[PARAMS.index("log10_age")]), 4))  # fmt: skip
    return out


def distance_by_snr(samples, truth, parallax, parallax_error) -> dict[str, tuple[int, float]]:
    """``{bin: (stars, log10_distance coverage error)}`` per :data:`SNR_BINS` bin (NaN: empty)."""
    d = PARAMS.index("log10_distance")
    snr = np.asarray(parallax) / np.asarray(parallax_error)
    out = {}
    for label, (lo, hi) in SNR_BINS.items():
        sel = (snr >= lo) & (snr < hi)
        err = (
            coverage_error(samples[sel][..., [d]], truth[sel][:, [d]]).max()
            if sel.any()
            else np.nan
        )
        out[label] = (int(sel.sum()), round(float(err), 4))
    return out


def _scores(samples, truth, young, params, disk_samples, disk_truth, binning=None) -> dict:
    cov = coverage_error(samples, truth)
    mad = np.median(np.abs(np.median(samples, axis=1) - truth), axis=0)
    age = samples[..., params.index("log10_age")]
    out = {
        "coverage_error": dict(zip(params, cov.round(4).tolist(), strict=True)),
        "max_coverage_error": float(cov.max()),
        "mad": dict(zip(params, mad.round(4).tolist(), strict=True)),
        "auc_p_young": roc_auc(p_young(age), young),
    }
    if binning is not None:
        out["by_p_young"] = coverage_by_p_young(samples, truth, binning)
    if disk_samples is not None:
        out["auc_p_disk"] = roc_auc(p_disk(disk_samples), disk_truth)
    return out


def _print_tables(results: dict, args, timings: dict, models: tuple[str, ...]) -> None:
    spent = json.dumps({k: round(v, 1) for k, v in timings.items()})
    if timings:
        print(f"\ntraining: {args.minutes} min per model; {spent}")
    else:
        print(f"\nmodels: npe {args.npe or 'default'}, simformer {args.simformer}")
    print(f"sampling: {args.samples} samples/star; simformer {args.solver} x {args.steps} steps; "
          f"attention {args.attention}\n")  # fmt: skip
    print("| pattern | stars | model | " + " | ".join(f"MAD {p}" for p in PARAMS)
          + " | max cov. err | AUC p_young | AUC p_disk |")  # fmt: skip
    print("|" + "---|" * (len(PARAMS) + 6))
    for pattern, entry in results.items():
        for model in models:
            s = entry[model]
            mads = " | ".join(f"{s['mad'][p]:.3f}" for p in PARAMS)
            disk = f"{s['auc_p_disk']:.3f}" if "auc_p_disk" in s else "-"
            print(f"| {pattern} | {entry['n_stars']} | {model} | {mads} | "
                  f"{s['max_coverage_error']:.3f} | {s['auc_p_young']:.3f} | {disk} |")  # fmt: skip
    for pattern, entry in results.items():
        for model in models:
            if f"{model}_s" in entry:  # a recalibration: its time beside the sampling's
                sampling = entry[f"{model.removesuffix('+recal')}_sample_s"]
                print(f"{pattern}: {model} moves {entry['n_stars'] / entry[f'{model}_s']:,.0f} "
                      f"stars/s, sampling ran {entry['n_stars'] / sampling:,.1f} stars/s: "
                      f"{entry[f'{model}_s'] / sampling:.4f} of the sampling time")  # fmt: skip
    print("\ncoverage error (max over 10 levels) per parameter")
    print("| pattern | model | " + " | ".join(PARAMS) + " |")
    print("|" + "---|" * (len(PARAMS) + 2))
    for pattern, entry in results.items():
        for model in models:
            cov = " | ".join(f"{entry[model]['coverage_error'][p]:.3f}" for p in PARAMS)
            print(f"| {pattern} | {model} | {cov} |")
    conditional = any("by_p_young" in entry["npe"] for entry in results.values())
    if conditional:
        print("\ncoverage error (max over 10 levels and parameters) by the star's p_young "
              "from independent draws [stars]; log10_age's in brackets")  # fmt: skip
        print("| pattern | model | " + " | ".join(f"p_young {b}" for b in P_YOUNG_BINS) + " |")
        print("|" + "---|" * (len(P_YOUNG_BINS) + 2))
    for pattern, entry in results.items() if conditional else ():
        for model in models:
            cells = " | ".join(
                f"{worst:.3f} ({age:.3f}) [{n}]"
                for n, worst, age in entry[model]["by_p_young"].values()
            )
            print(f"| {pattern} | {model} | {cells} |")  # fmt: skip
    all_bands = results.get("all+plx", {})
    for model in models[1:] if all_bands else ():
        s = all_bands[model]
        if "auc_excess" not in s:
            continue
        print(f"{model}: ROC AUC of the largest infrared-excess score for a disk "
              f"({s['n_excess']} stars with a scored band): {s['auc_excess']:.3f}")  # fmt: skip
    print("\nlog10_distance coverage error (max over 10 levels) by parallax S/N [stars]")
    print("| pattern | model | " + " | ".join(f"S/N {b}" for b in SNR_BINS) + " |")
    print("|" + "---|" * (len(SNR_BINS) + 2))
    for pattern, entry in results.items():
        for model in models:
            bins = entry[model].get("distance_by_snr")
            if bins:
                cells = " | ".join(f"{e:.3f} [{n}]" for n, e in bins.values())
                print(f"| {pattern} | {model} | {cells} |")
    if not all_bands:
        return
    print("\nguidance ablation (all bands + parallax): median |m_fwd(theta) - m|, mag")
    print("| model | vs observed (disk-free) | vs own predicted bands | max cov. err |")
    print("|---|---|---|---|")
    for model in models:
        s = all_bands[model]
        pred = f"{s['residual_predicted']:.4f}" if "residual_predicted" in s else "-"
        print(f"| {model} | {s['residual_observed']:.4f} | {pred} | "
              f"{s['max_coverage_error']:.3f} |")  # fmt: skip


def _summary(results: dict, timings: dict, args, seconds: float, models: tuple[str, ...]) -> dict:
    def ratio(a: float, b: float) -> float:
        return round(a / b, 4) if b and math.isfinite(a) and math.isfinite(b) else float("nan")

    out: dict = {"n_train": args.n_train, "n_test": args.n_test, "minutes_per_model":
                 args.minutes, "samples": args.samples, "steps": args.steps,
                 "attention": args.attention}  # fmt: skip
    if args.simformer:  # given models: nothing was trained here
        out |= {"n_train": None, "minutes_per_model": None, "simformer": args.simformer,
                "npe": args.npe or "default", "attention": None}  # fmt: skip
    for pattern, entry in results.items():
        for model in models:
            s = entry[model]
            out[f"{pattern}/{model}/max_coverage_error"] = round(s["max_coverage_error"], 4)
            if f"{model}_s" in entry:
                sampling = entry[f"{model.removesuffix('+recal')}_sample_s"]
                out[f"{pattern}/{model}/time_ratio_vs_sampling"] = round(
                    entry[f"{model}_s"] / sampling, 5)  # fmt: skip
            for label, (_, worst, _) in s.get("by_p_young", {}).items():
                out[f"{pattern}/{model}/coverage_error_p_young_{label}"] = worst
            out[f"{pattern}/{model}/auc_p_young"] = round(s["auc_p_young"], 4)
            out[f"{pattern}/{model}/mad_log10_age"] = s["mad"]["log10_age"]
            for label, (_, err) in s.get("distance_by_snr", {}).items():
                out[f"{pattern}/{model}/distance_coverage_error_snr_{label}"] = err
        out[f"{pattern}/mad_log10_age_ratio_simformer_vs_npe"] = ratio(
            entry["simformer"]["mad"]["log10_age"], entry["npe"]["mad"]["log10_age"]
        )
        out[f"{pattern}/simformer/auc_p_disk"] = round(entry["simformer"]["auc_p_disk"], 4)
    out |= {k: round(v, 1) for k, v in timings.items()}
    out["n_test_stars"] = max(entry["n_stars"] for entry in results.values())
    out["seconds"] = round(seconds, 1)
    if "all+plx" not in results:
        return out
    entry = results["all+plx"]
    for model in models:
        out[f"residual_observed/{model}"] = round(entry[model]["residual_observed"], 4)
    for model in models[1:]:
        if "auc_excess" in entry[model]:
            out[f"residual_predicted/{model}"] = round(entry[model]["residual_predicted"], 4)
            out[f"all+plx/{model}/auc_excess_disk"] = round(entry[model]["auc_excess"], 4)
    if "simformer_guided" in entry:
        out["residual_observed_ratio_guided_vs_unguided"] = ratio(
            entry["simformer_guided"]["residual_observed"], entry["simformer"]["residual_observed"]
        )
    out["residual_observed_ratio_simformer_vs_npe"] = ratio(
        entry["simformer"]["residual_observed"], entry["npe"]["residual_observed"]
    )
    return out


if __name__ == "__main__":
    main()
