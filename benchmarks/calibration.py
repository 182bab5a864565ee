"""Calibration and accuracy of a trained posterior estimator on held-out simulated stars.

For stars of the store's validation split (never seen in training), per survey combination
(Gaia only; Gaia+2MASS; Gaia+2MASS+WISE+PS1; all): expected-versus-empirical coverage of
central credible intervals at 10 levels for every parameter, and the MAD / RMS of the
posterior median against the truth, for the parameters the model infers and for Teff and
log g derived from each sample through the isochrones. Last line: one JSON object.

    python benchmarks/calibration.py --model MODEL_DIR --store STORE.zarr [--n 100000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ysoscale.nn import PosteriorEstimator
from ysoscale.physics.forward import ForwardModel
from ysoscale.simulate.surveys import SURVEY_MODELS
from ysoscale.train.loader import StoreLoader

COMBINATIONS = {
    "gaia": ("gaia",),
    "gaia+tmass": ("gaia", "tmass"),
    "gaia+tmass+wise+ps1": ("gaia", "tmass", "wise", "ps1"),
    "all": tuple(SURVEY_MODELS),
}
LEVELS = np.linspace(0.1, 0.95, 10)


def held_out(model: PosteriorEstimator, store: str, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` validation stars, as stored (no dropout, no re-observation)."""
    config = model.config
    loader = StoreLoader(store, config.params, config.bands, split="validation", batch_size=n,
                         band_dropout=0.0, survey_dropout=0.0, redraw_noise=False)  # fmt: skip
    batch = next(loader.epoch(0))
    return {f: getattr(batch, f)[:n] for f in ("theta", "mag", "mag_err", "parallax",
                                                "parallax_error")}  # fmt: skip


def restrict(data: dict[str, np.ndarray], bands: tuple[str, ...], surveys: tuple[str, ...]):
    """Keep only the surveys' bands (and the parallax with Gaia); drop stars left empty."""
    keep_bands = {b for s in surveys for b in SURVEY_MODELS[s].bands}
    mask = np.array([b in keep_bands for b in bands])
    mag = np.where(mask, data["mag"], np.nan)
    err = np.where(mask, data["mag_err"], np.nan)
    parallax = data["parallax"] if "gaia" in surveys else np.full_like(data["parallax"], np.nan)
    rows = np.isfinite(mag).any(axis=1)
    return rows, mag[rows], err[rows], parallax[rows], data["parallax_error"][rows]


def coverage(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Empirical coverage (level, param) of central credible intervals."""
    out = np.empty((len(LEVELS), truth.shape[1]))
    for i, level in enumerate(LEVELS):
        lo = np.quantile(samples, 0.5 - level / 2, axis=1)
        hi = np.quantile(samples, 0.5 + level / 2, axis=1)
        out[i] = ((truth >= lo) & (truth <= hi)).mean(axis=0)
    return out


def derived_teff_logg(
    forward: ForwardModel, names: list[str], samples: np.ndarray, truth: np.ndarray
):
    """Teff and log g of each sample and of the truth through the isochrones (NaN if the
    sample falls where the tracks are undefined)."""
    index = {p: i for i, p in enumerate(names)}
    needed = ("log10_mass", "log10_age", "mh")
    if not all(p in index for p in needed) or forward.isochrones is None:
        return None

    def lookup(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = values.reshape(-1, values.shape[-1])
        args = [torch.as_tensor(flat[:, index[p]], dtype=torch.float32) for p in needed]
        derived, ok = forward.isochrones(*args)
        teff = np.where(ok.numpy(), 10 ** derived["log10_teff"].numpy(), np.nan)
        logg = np.where(ok.numpy(), derived["logg"].numpy(), np.nan)
        return teff.reshape(values.shape[:-1]), logg.reshape(values.shape[:-1])

    return lookup(samples), lookup(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2000 stars")
    args = parser.parse_args()
    n = 2000 if args.quick else args.n

    model = PosteriorEstimator.load(args.model)
    forward = ForwardModel.default(bands=["gaia_g"])
    data = held_out(model, args.store, n)
    names = list(model.config.params)
    summary: dict[str, object] = {"n_requested": n, "samples": args.samples}
    for label, surveys in COMBINATIONS.items():
        rows, mag, err, parallax, parallax_error = restrict(data, model.config.bands, surveys)
        truth = data["theta"][rows]
        start = time.perf_counter()
        samples, _ = model.sample(mag, err, parallax, parallax_error, n_samples=args.samples)
        seconds = time.perf_counter() - start
        samples = samples.numpy()
        cov = coverage(samples, truth)
        error = np.median(samples, axis=1) - truth
        stats = {
            name: {
                "mad": float(np.median(np.abs(error[:, j] - np.median(error[:, j])))),
                "rms": float(np.sqrt(np.mean(error[:, j] ** 2))),
                "bias": float(np.median(error[:, j])),
                "max_coverage_error": float(np.max(np.abs(cov[:, j] - LEVELS))),
            }
            for j, name in enumerate(names)
        }
        derived = derived_teff_logg(forward, names, samples, truth)
        if derived is not None:
            (teff_s, logg_s), (teff_t, logg_t) = derived
            for name, s, t in (("teff", teff_s, teff_t), ("logg", logg_s, logg_t)):
                e = np.nanmedian(s, axis=1) - t
                e = e[np.isfinite(e)]
                stats[name] = {
                    "mad": float(np.median(np.abs(e - np.median(e)))),
                    "rms": float(np.sqrt(np.mean(e**2))),
                    "bias": float(np.median(e)),
                }
        print(f"\n{label}: {rows.sum():,} stars, sampling {rows.sum() / seconds:,.0f} stars/s")
        print(f"  {'param':<15}{'MAD':>9}{'RMS':>9}{'bias':>9}{'max |cov-exp|':>15}")
        for name, s in stats.items():
            cov_text = f"{s['max_coverage_error']:>15.3f}" if "max_coverage_error" in s else ""
            print(f"  {name:<15}{s['mad']:>9.3f}{s['rms']:>9.3f}{s['bias']:>9.3f}{cov_text}")
        summary[label] = {"n": int(rows.sum()), **{k: v for k, v in stats.items()}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
