"""Held-out reconstruction of real Gaia XP spectra: scatter-VAE against PCA, same latent size.

Ingests the 2,000-source Gaia DR3 XP chunk, trains the sVAE (``train_svae``, as
``ysoscale train --model svae`` does) on the 80 % of stars outside the hash-chosen
validation split, and scores the held-out 20 % by their reconstruction chi2 per
coefficient (against the published errors), beside, fitted in the same run on the same
training stars:

* PCA with as many components as the latent has dimensions (scikit-learn), on the
  normalised coefficients and on robustly standardised ones (the better is the baseline);
* the sVAE at initialisation (its linear paths set to the principal components, before
  any training step), to show what training adds.

It then fits HDBSCAN populations on the training latents, assigns all 2,000 stars, and
writes ``docs/xp_latent.png`` (latent projections by population),
``docs/xp_latent_colour.png`` (the same coloured by a colour proxy) and
``docs/xp_anomalies.png`` (most anomalous spectra against their reconstructions). The
four archive stars that carry correlation arrays are scored with the full covariance and
with the diagonal errors alone. Last line: one JSON object.

    python benchmarks/xp_svae.py [--quick] [--epochs N] [--data DIR] [--docs DIR]

``--quick`` trains 100 epochs (well under a minute of one core); the default is 300.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ysoscale.catalog.xp import ingest_xp
from ysoscale.nn.svae import ScatterVAE, SVAEConfig
from ysoscale.xp.baseline import pca_chi2_dof
from ysoscale.xp.data import read_store
from ysoscale.xp.kernel import encode_arrays
from ysoscale.xp.plots import plot_anomalies, plot_latent
from ysoscale.xp.populations import NOISE, Populations
from ysoscale.xp.train import XPTrainingConfig, new_model, train_svae, validation_mask

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "xp_gaia_dr3"


def stats(values: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(values)), "mean": float(np.mean(values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 epochs")
    parser.add_argument("--epochs", type=int, help="training epochs (default 300; quick 100)")
    parser.add_argument("--data", type=Path, default=DATA, help="the xp_gaia_dr3 directory")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where PNGs go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epochs = args.epochs or (100 if args.quick else 300)
    torch.set_num_threads(1)
    chunk = args.data / "xp_continuous_chunk0.fits"
    examples = args.data / "xp_continuous_examples_with_correlations.vot"
    if not chunk.exists():
        raise SystemExit(f"no {chunk}: the real Gaia XP sample is needed")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ingest_xp([chunk], tmp / "xp.zarr")
        arrays = read_store(tmp / "xp.zarr")
        config = XPTrainingConfig(epochs=epochs, seed=args.seed)
        model_config = SVAEConfig()
        held = validation_mask(arrays.source_id, config.validation_fraction, config.seed)
        train, test = arrays.subset(~held), arrays.subset(held)
        usable = test.usable
        print(
            f"Gaia DR3 XP: {len(arrays):,} sources, {int(train.usable.sum()):,} training, "
            f"{int(usable.sum()):,} held out; latent {model_config.latent}-d, {epochs} epochs"
        )

        initial = encode_arrays(new_model(model_config, train, config.seed), test)["chi2_dof"]
        pca_plain, _ = pca_chi2_dof(train, test, model_config.latent)
        pca_std, _ = pca_chi2_dof(train, test, model_config.latent, standardise=True)
        report = train_svae(tmp / "xp.zarr", tmp / "model", model_config, config, progress=False)
        model = ScatterVAE.load(tmp / "model")
        populations = Populations.load(tmp / "model")
        trained = encode_arrays(model, test)["chi2_dof"]
        train_seconds = report.seconds

        scores = {
            "svae": stats(trained[usable]),
            "svae_at_init": stats(initial[usable]),
            "pca": stats(pca_plain[usable]),
            "pca_standardised": stats(pca_std[usable]),
        }
        baseline = min(("pca", "pca_standardised"), key=lambda k: scores[k]["median"])
        print(f"training: {report.epochs_run} epochs in {train_seconds:.0f} s, best epoch "
              f"{report.best_epoch}")  # fmt: skip
        print("held-out reconstruction chi2/dof (110 coefficients, published errors):")
        for name, value in scores.items():
            print(f"  {name:<18} median {value['median']:8.4f}   mean {value['mean']:9.4f}")
        better = (trained[usable] < np.where(baseline == "pca", pca_plain, pca_std)[usable]).mean()
        print(f"  sVAE below {baseline} for {better:.1%} of held-out stars")

        everything = encode_arrays(model, arrays, reconstructions=True)
        labels = populations.assign(everything["latent"])
        counts = {("noise" if k == NOISE else f"population {k}"): int((labels == k).sum())
                  for k in np.unique(labels[arrays.usable])}  # fmt: skip
        print(f"HDBSCAN (training latents, all stars assigned): {counts}")
        latent_png = plot_latent(
            everything["latent"][arrays.usable], args.docs / "xp_latent.png",
            populations=labels[arrays.usable],
            title=f"sVAE latent of {int(arrays.usable.sum()):,} Gaia DR3 XP spectra, "
            "by HDBSCAN population",
        )  # fmt: skip
        colour_png = plot_latent(
            everything["latent"][arrays.usable], args.docs / "xp_latent_colour.png",
            values=arrays.coefficients[arrays.usable, 0], label="BP0 / (BP0 + RP0)  (colour proxy)",
            title="sVAE latent coloured by the BP share of the flux proxy (blue: red stars)",
        )  # fmt: skip
        anomalies_png = plot_anomalies(
            arrays, everything["reconstruction"], everything["scatter"], everything["anomaly"],
            args.docs / "xp_anomalies.png",
        )  # fmt: skip
        anomaly = everything["anomaly"][arrays.usable]
        print(f"anomaly: median {np.median(anomaly):.3f}, 99th percentile "
              f"{np.percentile(anomaly, 99):.2f}, max {anomaly.max():.1f}")  # fmt: skip
        print(f"wrote {latent_png}, {colour_png} and {anomalies_png}")

        full = {}
        if examples.exists():
            ingest_xp([examples], tmp / "examples.zarr")
            corr = read_store(tmp / "examples.zarr")
            diagonal = dataclasses.replace(corr, correlations=None)
            with_full = encode_arrays(model, corr)["chi2_dof"]
            with_diag = encode_arrays(model, diagonal)["chi2_dof"]
            for sid, a, b in zip(corr.source_id, with_full, with_diag, strict=True):
                print(f"  correlated example {sid}: chi2/dof full covariance {a:9.3f}, "
                      f"diagonal errors {b:9.3f}")  # fmt: skip
            full = {
                "examples_chi2_dof_full_cov_median": float(np.median(with_full)),
                "examples_chi2_dof_diagonal_median": float(np.median(with_diag)),
            }

    summary = {
        "svae_chi2_dof": round(scores["svae"]["median"], 4),
        "pca_chi2_dof": round(scores[baseline]["median"], 4),
        "ratio": round(scores["svae"]["median"] / scores[baseline]["median"], 4),
        "svae_chi2_dof_mean": round(scores["svae"]["mean"], 4),
        "pca_chi2_dof_mean": round(scores[baseline]["mean"], 4),
        "ratio_mean": round(scores["svae"]["mean"] / scores[baseline]["mean"], 4),
        "svae_at_init_chi2_dof": round(scores["svae_at_init"]["median"], 4),
        "baseline": baseline,
        "statistic": "median (and mean) over held-out stars of chi2 per coefficient",
        "latent": model_config.latent,
        "n_train": int(train.usable.sum()),
        "n_held_out": int(usable.sum()),
        "epochs": report.epochs_run,
        "train_seconds": round(train_seconds, 1),
        "n_populations": populations.n_populations,
        **{k: round(v, 4) for k, v in full.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
