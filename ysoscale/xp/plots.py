"""Plots of the XP latent space: pairwise projections and the most anomalous spectra.

:func:`plot_latent` draws every 2-D projection of the latent (lower triangle of a pair
grid), coloured by population or by any per-star value (e.g. a posterior median).
:func:`plot_anomalies` draws the highest-anomaly stars' normalised coefficients with
their errors against the reconstruction and its scatter band. :func:`plot_latent_source`
is what ``ysoscale plot latent`` calls, on a posterior cube with XP variables or on an XP
store with a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from ysoscale.xp.normalise import N_BASES, XPArrays
from ysoscale.xp.populations import NOISE

POSTERIOR_PARAMS = ("teff", "logg", "log10_age", "mh", "av", "log10_mass")
"""Posterior medians the latent is coloured by, where the cube has them."""


def _pair_axes(dim: int, size: float = 2.4):
    """A lower-triangle grid of ``(dim - 1)^2`` axes (unused ones hidden)."""
    n = max(dim - 1, 1)
    fig = Figure(figsize=(size * n + 1.2, size * n))
    axes = fig.subplots(n, n, squeeze=False)
    for row in range(n):
        for col in range(n):
            if col > row:
                axes[row, col].set_visible(False)
    return fig, axes


def plot_latent(
    latent: np.ndarray,
    path: str | Path,
    *,
    populations: np.ndarray | None = None,
    values: np.ndarray | None = None,
    label: str = "",
    title: str = "",
) -> Path:
    """Pairwise 2-D projections of ``latent`` ``(n, d)``, coloured by population or value.

    Parameters
    ----------
    latent : ndarray
        Rows with NaN are left out.
    path : path
        PNG written.
    populations : ndarray, optional
        Integer population per star (-1 noise, drawn grey and small).
    values : ndarray, optional
        A value per star for a colour scale (``label`` names it).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> plot_latent(rng.normal(size=(100, 3)), "latent.png",
    ...             populations=rng.integers(-1, 2, 100))  # doctest: +SKIP
    PosixPath('latent.png')
    """
    latent = np.asarray(latent, dtype=np.float64)
    dim = latent.shape[1]
    ok = np.isfinite(latent).all(axis=1)
    if values is not None:
        ok &= np.isfinite(values)
    latent = latent[ok]
    if dim < 2:
        raise ValueError(f"a latent of dimension {dim} has no 2-D projections")
    fig, axes = _pair_axes(dim)
    values = None if values is None else np.asarray(values, dtype=np.float64)
    pairs = [(i, j) for j in range(dim - 1) for i in range(j + 1, dim)]
    handles = None
    for i, j in pairs:
        ax = axes[i - 1, j]
        if populations is not None:
            pops = np.asarray(populations)[ok]
            noise = pops == NOISE
            ax.scatter(latent[noise, j], latent[noise, i], s=2, c="0.75", lw=0, label="noise")
            for k, pop in enumerate(np.unique(pops[pops >= 0])):
                member = pops == pop
                ax.scatter(
                    latent[member, j],
                    latent[member, i],
                    s=4,
                    lw=0,
                    color=colormaps["tab10"](k % 10),
                    label=f"population {pop} ({member.sum()})",
                )
            handles = ax.get_legend_handles_labels()
        else:
            order = np.argsort(values[ok]) if values is not None else slice(None)
            colour = values[ok][order] if values is not None else "k"
            handles = ax.scatter(
                latent[order, j], latent[order, i], s=3, lw=0, c=colour, cmap="viridis"
            )
        ax.tick_params(labelsize=7)
        if i == dim - 1:
            ax.set_xlabel(f"z{j}")
        if j == 0:
            ax.set_ylabel(f"z{i}")
    if populations is not None and handles is not None:
        noise_count = int((np.asarray(populations)[ok] == NOISE).sum())
        labels = [f"noise ({noise_count})" if t == "noise" else t for t in handles[1]]
        fig.legend(handles[0], labels, loc="upper right", markerscale=4, fontsize=9)
    elif values is not None:
        fig.colorbar(handles, ax=axes, label=label, shrink=0.6)
    fig.suptitle(title or f"XP latent ({len(latent):,} stars)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_anomalies(
    arrays: XPArrays,
    reconstruction: np.ndarray,
    scatter: np.ndarray,
    anomaly: np.ndarray,
    path: str | Path,
    *,
    n: int = 6,
) -> Path:
    """The ``n`` most anomalous stars: coefficients (with errors) vs reconstruction.

    Each star gets two panels: normalised coefficients on a symmetric-log scale, data
    with error bars and the reconstruction with its scatter band (BP then RP), and the
    residual in units of the error.

    Examples
    --------
    >>> plot_anomalies(arrays, out["reconstruction"], out["scatter"],
    ...                out["anomaly"], "anomalies.png")  # doctest: +SKIP
    PosixPath('anomalies.png')
    """
    score = np.where(np.isfinite(anomaly), anomaly, -np.inf)
    top = np.argsort(score)[::-1][: min(n, int(np.isfinite(anomaly).sum()))]
    fig = Figure(figsize=(12, 2.9 * max(len(top), 1)))
    grid = fig.add_gridspec(2 * max(len(top), 1), 1, height_ratios=[3, 1] * max(len(top), 1))
    index = np.arange(2 * N_BASES)
    for k, row in enumerate(top):
        top_ax = fig.add_subplot(grid[2 * k])
        res_ax = fig.add_subplot(grid[2 * k + 1], sharex=top_ax)
        x, sigma = arrays.coefficients[row], arrays.errors[row]
        x_hat, s = reconstruction[row], scatter[row]
        for band, part, colour in (
            ("BP", slice(0, N_BASES), "tab:blue"),
            ("RP", slice(N_BASES, None), "tab:red"),
        ):
            top_ax.errorbar(
                index[part],
                x[part],
                sigma[part],
                fmt="o",
                ms=2.5,
                lw=0.8,
                color=colour,
                label=f"{band} data",
            )
            top_ax.plot(index[part], x_hat[part], color="k", lw=1)
            top_ax.fill_between(
                index[part],
                x_hat[part] - s[part],
                x_hat[part] + s[part],
                color="0.6",
                alpha=0.5,
                lw=0,
            )
            res_ax.plot(index[part], (x[part] - x_hat[part]) / sigma[part], ".", ms=3, color=colour)
        top_ax.plot([], [], color="k", label="sVAE reconstruction (band: scatter)")
        top_ax.set_yscale("symlog", linthresh=max(float(np.median(sigma)) * 3, 1e-6))
        top_ax.set_ylabel("coefficient / flux")
        top_ax.set_title(
            f"source_id {arrays.source_id[row]}   anomaly {anomaly[row]:.1f}   "
            f"flux proxy {arrays.flux[row]:.0f} e-/s",
            fontsize=10,
        )
        top_ax.tick_params(labelbottom=False)
        res_ax.axhline(0, color="k", lw=0.5)
        res_ax.set_ylabel("resid./σ", fontsize=8)
        if k == 0:
            top_ax.legend(fontsize=8, loc="upper right")
        if k == len(top) - 1:
            res_ax.set_xlabel("coefficient index (0-54 BP, 55-109 RP)")
    fig.suptitle(f"{len(top)} most anomalous XP spectra vs their sVAE reconstructions")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _from_cube(path: Path, out_dir: Path) -> list[Path]:
    from ysoscale.infer.cube import open_cube

    cube = open_cube(path)
    if "xp_latent" not in cube:
        raise ValueError(f"{path} has no xp_latent: run `ysoscale infer ... --xp XP_STORE` first")
    latent = cube.xp_latent.values
    has = np.isfinite(latent).all(axis=1)
    if not has.any():
        raise ValueError(f"{path}: no star has an XP latent (none found in the XP store?)")
    latent = latent[has]
    written = [
        plot_latent(
            latent,
            out_dir / "latent_populations.png",
            populations=cube.xp_population.values[has],
            title=f"XP latent of {has.sum():,} stars, by HDBSCAN population",
        )
    ]
    params = [p for p in POSTERIOR_PARAMS if p in cube.param.values]
    for param in params:
        median = cube.summary.sel(stat="median", param=param).values[has]
        written.append(
            plot_latent(
                latent,
                out_dir / f"latent_{param}.png",
                values=median,
                label=f"posterior median {param}",
                title=f"XP latent coloured by posterior median {param}",
            )
        )
    return written


def _from_store(path: Path, model_dir: Path, out_dir: Path) -> list[Path]:
    from ysoscale.nn.svae import ScatterVAE
    from ysoscale.xp.data import read_store
    from ysoscale.xp.kernel import encode_arrays
    from ysoscale.xp.populations import Populations

    arrays = read_store(path)
    out = encode_arrays(ScatterVAE.load(model_dir), arrays, reconstructions=True)
    populations = Populations.load(model_dir).assign(out["latent"])
    ok = arrays.usable
    return [
        plot_latent(
            out["latent"][ok],
            out_dir / "latent_populations.png",
            populations=populations[ok],
            title=f"XP latent of {ok.sum():,} stars, by HDBSCAN population",
        ),
        plot_anomalies(
            arrays,
            out["reconstruction"],
            out["scatter"],
            out["anomaly"],
            out_dir / "xp_anomalies.png",
        ),
    ]


def plot_latent_source(
    source: str | Path,
    out_dir: str | Path,
    *,
    model_dir: str | Path | None = None,
) -> Sequence[Path]:
    """Latent plots of a posterior cube with XP variables, or of an XP store + model.

    A cube (``posteriors.zarr`` or the ``infer`` output directory) gives the latent by
    population and by each posterior median of :data:`POSTERIOR_PARAMS` it holds; an XP
    store (with ``model_dir``) gives the latent by population and the most anomalous
    spectra.

    Raises
    ------
    ValueError
        If ``source`` is neither, a store is given without a model, or a cube has no
        XP variables.

    Examples
    --------
    >>> plot_latent_source("out", "plots")  # doctest: +SKIP
    """
    source, out_dir = Path(source), Path(out_dir)
    cube = source / "posteriors.zarr" if (source / "posteriors.zarr").exists() else source
    if (cube / "partition_done").exists():
        return _from_cube(cube, out_dir)
    if (source / "bp_coefficients").exists():
        if model_dir is None:
            raise ValueError(f"{source} is an XP store: give the sVAE with --model")
        return _from_store(source, Path(model_dir), out_dir)
    raise ValueError(f"{source} is neither a posterior cube nor an ingest-xp store")


__all__ = ["POSTERIOR_PARAMS", "plot_anomalies", "plot_latent", "plot_latent_source"]
