"""The estimator on real stars: Kepler labels, Sco-Cen ages, rho Oph members.

Each shipped real sample (:mod:`ysoscale.catalog.samples`, converted from
``../shared/data`` with provenance) goes through the production path, ``ysoscale infer``
(row checks, kernel, posterior cube), with the default model unless ``--model`` is given:

* **kepler**: 2,236 stars (mostly red giants) with 2MASS JHK, KIC griz and TGAS parallax;
  posterior medians of Teff and log g (derived through the isochrones) and [M/H] against
  the spectroscopic Teff/[Fe/H] and asteroseismic log g: MAD and median bias, overall
  and per label source (APOGEE / SPC). Targets (issue 4): Teff MAD ≤ 150 K, log g MAD ≤
  0.2 dex, [Fe/H] MAD ≤ 0.2 dex.
* **scocen**: 14,437 Gaia DR2 pre-main-sequence candidates towards Sco-Cen (Damiani et
  al. 2019); posterior ages per population (Upper Sco is ~10 Myr, UCL/LCC ~15-20 Myr,
  IC 2602 ~40 Myr) and the share of stars with a median age below 30 Myr. Every star of
  that table is flagged a PMS candidate (``p``), so there is no "rest" to compare with in
  it; populations play that role. When the Kepler set runs too, its stars (real field
  stars, mostly Gyr-old red giants) are the negatives of a ROC AUC of ``p_young``
  (issue 6's "Sco-Cen ``p`` stars vs the rest", with the caveat that the two sets were
  observed in different surveys: Gaia + parallax against 2MASS + KIC griz + TGAS).
* **rho_oph**: 48 members of a 1-3 Myr region with Gaia, 2MASS and WISE; posterior ages,
  A_V and, for a model with a ``has_disk`` parameter (the Simformer), the share of stars
  with p_disk >= 0.5 by SED class (issue 6: >= 80 % of class II, few photospheric ones).

    python benchmarks/real_data.py [--set kepler,scocen,rho_oph] [--model DIR] [--quick]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ysoscale.catalog import load_sample
from ysoscale.infer.cube import open_cube
from ysoscale.infer.run import infer
from ysoscale.nn.predictive import roc_auc

SETS = ("kepler", "scocen", "rho_oph")
TARGETS = {"teff": 150.0, "logg": 0.2, "mh": 0.2}


def posterior_medians(frame: pd.DataFrame, model: str | None, samples: int) -> pd.DataFrame:
    """Run ``infer`` on ``frame`` (in this process) and return medians/p16/p84 by source_id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.parquet"
        frame.to_parquet(path)
        infer(path, Path(tmp) / "out", model=model, n_samples=samples, workers=0, progress=False)
        cube = open_cube(Path(tmp) / "out" / "posteriors.zarr").load()
    table = {"source_id": cube.source_id.values, "flags": cube.flags.values}
    for name in ("p_young", "p_disk"):  # cubes of older versions lack them
        if name in cube:
            table[name] = cube[name].values
    for stat in ("median", "p16", "p84"):
        values = cube.summary.sel(stat=stat).values
        for j, param in enumerate(cube.param.values):
            table[f"{param}_{stat}"] = values[:, j]
    return pd.DataFrame(table)


def _mad_bias(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    error = estimate - truth
    error = error[np.isfinite(error)]
    median = float(np.median(error))
    return {"mad": float(np.median(np.abs(error - median))), "bias": median, "n": len(error)}


def kepler(model: str | None, samples: int, quick: bool) -> tuple[dict, pd.DataFrame]:
    frame = load_sample("kepler")
    if quick:
        frame = frame.iloc[:200]
    result = frame.merge(posterior_medians(frame, model, samples), on="source_id")
    out: dict[str, object] = {}
    print(f"\nKepler: {len(result):,} stars")
    print(f"  {'label':<8}{'source':<8}{'n':>6}{'MAD':>10}{'bias':>10}{'target':>9}")
    for group, rows in [("all", result), *result.groupby("label_source")]:
        for ours, label in (("teff", "teff"), ("logg", "logg"), ("mh", "feh")):
            stats = _mad_bias(rows[f"{ours}_median"].to_numpy(), rows[label].to_numpy())
            out[f"{group}_{label}"] = stats
            print(f"  {label:<8}{group:<8}{stats['n']:>6}{stats['mad']:>10.3f}"
                  f"{stats['bias']:>10.3f}{TARGETS[ours]:>9}")  # fmt: skip
    return out, result


def scocen(model: str | None, samples: int, quick: bool) -> tuple[dict, pd.DataFrame]:
    frame = load_sample("scocen")
    if quick:
        frame = frame.sample(500, random_state=0)
    result = frame.merge(posterior_medians(frame, model, samples), on="source_id")
    age_myr = 10.0 ** (result["log10_age_median"] - 6.0)
    result["population"] = result["population"].fillna("").replace("", "(none)")
    out: dict[str, object] = {}
    print(f"\nSco-Cen: {len(result):,} PMS candidates; posterior median age by population")
    p_young = result["p_young"] if "p_young" in result else pd.Series(np.nan, index=result.index)
    print(f"  {'population':<14}{'n':>7}{'median age':>12}{'< 30 Myr':>10}{'p_young':>9}")
    for name, rows in [("all", result), *result.groupby("population")]:
        ages = age_myr.loc[rows.index]
        ages = ages[np.isfinite(ages)]
        if len(ages) < 5:
            continue
        young = float(np.mean(ages < 30.0))
        median_p_young = float(np.nanmedian(p_young.loc[rows.index]))
        out[name] = {"n": len(ages), "median_age_myr": float(np.median(ages)),
                     "fraction_below_30_myr": young, "median_p_young": median_p_young}  # fmt: skip
        print(f"  {name:<14}{len(ages):>7}{np.median(ages):>10.1f} Myr{young:>10.2f}"
              f"{median_p_young:>9.2f}")  # fmt: skip
    return out, result


def rho_oph(model: str | None, samples: int, quick: bool) -> tuple[dict, pd.DataFrame]:
    frame = load_sample("rho_oph")
    result = frame.merge(posterior_medians(frame, model, samples), on="source_id")
    age_myr = 10.0 ** (result["log10_age_median"] - 6.0)
    out: dict[str, object] = {}
    p_disk = result["p_disk"] if "p_disk" in result else pd.Series(np.nan, index=result.index)
    print(f"\nrho Oph: {len(result)} members; posterior medians by SED class")
    print(f"  {'class':<14}{'n':>4}{'age':>10}{'A_V':>7}{'p_disk>=0.5':>13}")
    for name, rows in [("all", result), *result.groupby("sed_class")]:
        ages, av = age_myr.loc[rows.index], rows["av_median"]
        disk = p_disk.loc[rows.index]
        # the check: class II stars p_disk >= 0.5, photospheric ones below
        share = float(np.mean(disk >= 0.5)) if np.isfinite(disk).all() else float("nan")
        out[str(name)] = {"n": len(rows), "median_age_myr": float(np.nanmedian(ages)),
                          "median_av": float(np.nanmedian(av)),
                          "share_p_disk_at_least_0.5": share}  # fmt: skip
        print(f"  {name!s:<14}{len(rows):>4}{np.nanmedian(ages):>6.1f} Myr{np.nanmedian(av):>7.2f}"
              f"{share:>13.2f}")  # fmt: skip
    return out, result


def young_against_field(scocen: pd.DataFrame, kepler: pd.DataFrame) -> dict[str, object]:
    """ROC AUC of ``p_young``: Sco-Cen PMS candidates (positives) against the Kepler field
    stars (negatives). Also the median ``p_young`` of each side and, as a score that does
    not need ``p_young``, the AUC of minus the posterior median age."""
    p_pos = scocen.get("p_young", pd.Series(np.nan, index=scocen.index)).to_numpy()
    p_neg = kepler.get("p_young", pd.Series(np.nan, index=kepler.index)).to_numpy()
    label = np.r_[np.ones(len(p_pos), bool), np.zeros(len(p_neg), bool)]
    age = np.r_[scocen["log10_age_median"].to_numpy(), kepler["log10_age_median"].to_numpy()]
    out = {"n_young": len(p_pos), "n_field": len(p_neg),
           "auc_p_young": roc_auc(np.r_[p_pos, p_neg], label),
           "auc_minus_median_age": roc_auc(-age, label),
           "median_p_young_scocen": float(np.nanmedian(p_pos)),
           "median_p_young_kepler": float(np.nanmedian(p_neg))}  # fmt: skip
    print(f"\np_young: Sco-Cen PMS candidates ({len(p_pos):,}) against Kepler field stars "
          f"({len(p_neg):,}; other surveys)")  # fmt: skip
    print(f"  ROC AUC of p_young {out['auc_p_young']:.3f}; of -median age "
          f"{out['auc_minus_median_age']:.3f}; median p_young {out['median_p_young_scocen']:.2f} "
          f"(Sco-Cen) / {out['median_p_young_kepler']:.2f} (Kepler)")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=",".join(SETS), help="comma-separated: " + ",".join(SETS))
    parser.add_argument("--model", help="model directory (default: the shipped model)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a few hundred stars per set")
    args = parser.parse_args()
    runs = {"kepler": kepler, "scocen": scocen, "rho_oph": rho_oph}
    summary: dict[str, object] = {}
    tables: dict[str, pd.DataFrame] = {}
    for name in args.set.split(","):
        if name not in runs:
            raise SystemExit(f"unknown set {name!r}; choose from {SETS}")
        start = time.perf_counter()
        summary[name], tables[name] = runs[name](args.model, args.samples, args.quick)
        summary[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
    if "scocen" in tables and "kepler" in tables:
        summary["young_against_field"] = young_against_field(tables["scocen"], tables["kepler"])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
