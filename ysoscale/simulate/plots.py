"""Pictures of a training store: Gaia CMD, Kiel diagram, band coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

YOUNG_LOG10_AGE = np.log10(10e6)


def _figure(size: tuple[float, float]):  # noqa: ANN202 - matplotlib Figure
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=110, layout="constrained")


def _sample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` stars (the plots need no more)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def plot_store(
    store_path: str | Path, out_dir: str | Path, *, max_points: int = 1_000_000
) -> list[Path]:
    """Draw ``gaia_cmd.png``, ``kiel.png`` and ``band_coverage.png`` for a store.

    Examples
    --------
    >>> paths = plot_store("train.zarr", "plots/")  # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with xr.open_zarr(store_path) as ds:
        index = _sample(ds.sizes["star"], max_points)
        gaia = ds.mag.sel(band=["gaia_g", "gaia_bp", "gaia_rp"]).values[index]
        theta = ds.theta.sel(param=["teff", "logg", "log10_age", "distance_pc"]).values[index]
        observed = np.isfinite(ds.mag.values[index])
        seen_any = observed.any(axis=1)
        coverage = observed.mean(axis=0)
        coverage_seen = observed[seen_any].mean(axis=0)
        bands = [str(b) for b in ds.band.values]
        n_total = ds.sizes["star"]
    teff, logg, log_age, distance = theta.T
    young = log_age < YOUNG_LOG10_AGE
    paths = []

    fig = _figure((6.5, 6.0))
    ax = fig.add_subplot()
    colour = gaia[:, 1] - gaia[:, 2]
    absolute = gaia[:, 0] - 5 * np.log10(distance / 10.0)
    seen = np.isfinite(colour) & np.isfinite(absolute)
    field = seen & ~young
    ax.hexbin(colour[field], absolute[field], gridsize=180, bins="log", cmap="Greys", mincnt=1,
              extent=(-0.8, 5.0, -6.0, 17.0))  # fmt: skip
    ax.scatter(colour[seen & young], absolute[seen & young], s=0.3, c="tab:red", alpha=0.15,
               rasterized=True, label=f"age < 10 Myr ({(seen & young).sum():,})")  # fmt: skip
    ax.set(xlim=(-0.8, 5.0), ylim=(17.0, -6.0), xlabel="BP − RP (observed, reddened)",
           ylabel="M_G = G − 5 log10(d / 10 pc)")  # fmt: skip
    ax.set_title(f"Gaia CMD: {seen.sum():,} of {len(index):,} plotted stars detected in G, BP, RP")
    ax.legend(loc="upper right", markerscale=8)
    paths.append(out / "gaia_cmd.png")
    fig.savefig(paths[-1])

    fig = _figure((6.5, 6.0))
    ax = fig.add_subplot()
    shown = _sample(len(teff), 200_000, seed=1)
    points = ax.scatter(teff[shown], logg[shown], c=log_age[shown], s=0.5, cmap="viridis_r",
                        vmin=5.7, vmax=10.1, rasterized=True)  # fmt: skip
    fig.colorbar(points, ax=ax, label="log10(age / yr)")
    ax.set(xscale="log", xlim=(40000, 2500), ylim=(5.7, -0.5), xlabel="Teff [K]",
           ylabel="log g [cgs]", title="Kiel diagram (true parameters)")  # fmt: skip
    ticks = [3000, 4000, 6000, 10000, 20000, 40000]
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()
    paths.append(out / "kiel.png")
    fig.savefig(paths[-1])

    fig = _figure((9.0, 4.0))
    ax = fig.add_subplot()
    x = np.arange(len(bands))
    ax.bar(x - 0.2, coverage_seen * 100, width=0.4, color="tab:blue",
           label=f"of stars seen in any band ({seen_any.mean():.1%} of all)")  # fmt: skip
    ax.bar(x + 0.2, coverage * 100, width=0.4, color="tab:gray", label="of all simulated stars")
    ax.set_xticks(x, bands, rotation=70, fontsize=8)
    ax.set(ylabel="stars observed in the band [%]", ylim=(0, 100),
           title=f"Band coverage of {n_total:,} simulated stars")  # fmt: skip
    ax.legend(loc="upper left")
    paths.append(out / "band_coverage.png")
    fig.savefig(paths[-1])
    return paths
