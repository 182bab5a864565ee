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


def _pair_axes(dim: int, size: float = 2.3, colorbar: bool = False):
    """A lower-triangle grid of ``(dim - 1)^2`` axes (the others hidden)."""
    n = dim - 1
    fig = Figure(figsize=(size * n + (1.0 if colorbar else 0.4), size * n + 0.6))
    axes = fig.subplots(n, n, squeeze=False)
    for row in range(n):
        for col in range(row + 1, n):
            axes[row, col].set_visible(False)
    right = 1.0 - (0.9 if colorbar else 0.15) / (size * n + 1.0)
    fig.subplots_adjust(left=0.7 / (size * n), right=right, bottom=0.5 / (size * n + 0.6),
                        top=1.0 - 0.5 / (size * n + 0.6), wspace=0.28, hspace=0.28)  # fmt: skip
    return fig, axes


def _limits(values: np.ndarray) -> tuple[float, float]:
    """Axis range holding the central 99 % of the values, with a margin (outliers fall
    outside the frame rather than squeezing the bulk)."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    pad = 0.12 * max(hi - lo, 1e-6)
    return float(lo - pad), float(hi + pad)


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
        Rows with NaN are left out; axes hold the central 99 % of each dimension.
    path : path
        PNG written.
    populations : ndarray, optional
        Integer population per star (-1 noise, drawn grey and small).
    values : ndarray, optional
        A value per star for a colour scale (``label`` names it).

    Raises
    ------
    ValueError
        If the latent has fewer than two dimensions or no finite row.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> plot_latent(rng.normal(size=(100, 3)), "latent.png",
    ...             populations=rng.integers(-1, 2, 100))  # doctest: +SKIP
    PosixPath('latent.png')
    """
    latent = np.asarray(latent, dtype=np.float64)
    dim = latent.shape[1]
    if dim < 2:
        raise ValueError(f"a latent of dimension {dim} has no 2-D projections")
    ok = np.isfinite(latent).all(axis=1)
    if values is not None:
        values = np.asarray(values, dtype=np.float64)
        ok &= np.isfinite(values)
        values = values[ok]
    if populations is not None:
        populations = np.asarray(populations)[ok]
    latent = latent[ok]
    if not len(latent):
        raise ValueError("no star with a finite latent to plot")
    fig, axes = _pair_axes(dim, colorbar=values is not None and dim == 2)
    limits = [_limits(latent[:, d]) for d in range(dim)]
    order = np.argsort(values) if values is not None else np.arange(len(latent))
    artist = None
    for j in range(dim - 1):
        for i in range(j + 1, dim):
            ax = axes[i - 1, j]
            x, y = latent[:, j], latent[:, i]
            if populations is not None:
                noise = populations == NOISE
                ax.scatter(x[noise], y[noise], s=2, c="0.7", lw=0,
                           label=f"noise ({noise.sum():,})")  # fmt: skip
                for k, pop in enumerate(np.unique(populations[populations >= 0])):
                    member = populations == pop
                    ax.scatter(x[member], y[member], s=4, lw=0, color=colormaps["tab10"](k % 10),
                               label=f"population {pop} ({member.sum():,})")  # fmt: skip
            else:
                colour = values[order] if values is not None else "k"
                artist = ax.scatter(x[order], y[order], s=3, lw=0, c=colour, cmap="viridis")
            ax.set_xlim(limits[j])
            ax.set_ylim(limits[i])
            ax.tick_params(labelsize=7)
            if i == dim - 1:
                ax.set_xlabel(f"z{j}")
            if j == 0:
                ax.set_ylabel(f"z{i}")
    if populations is not None:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if dim == 2:
            axes[0, 0].legend(handles, labels, markerscale=4, fontsize=8)
        else:
            fig.legend(handles, labels, loc="upper right", bbox_to_anchor=(0.97, 0.9),
                       markerscale=4, fontsize=10, frameon=False)  # fmt: skip
    elif artist is not None and values is not None:
        if dim == 2:
            fig.colorbar(artist, ax=axes[0, 0], label=label)
        else:  # in the empty upper-right triangle
            fig.colorbar(artist, cax=fig.add_axes((0.72, 0.58, 0.025, 0.32)), label=label)
    fig.suptitle(title or f"XP latent ({len(latent):,} stars)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _symlog_ticks(ax, linthresh: float, values: np.ndarray) -> None:
    """Ticks at 0, half and all of ``linthresh`` and at 0.5, where the data reach them."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    steps = [linthresh / 2, linthresh, 0.5]
    ticks = (
        [-v for v in steps[::-1] if lo <= -0.7 * v] + [0.0] + [v for v in steps if hi >= 0.7 * v]
    )
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{v:g}" for v in ticks])


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

    Each star gets two panels sharing the coefficient axis: the normalised
    coefficients on a symmetric-log scale (linear within 0.05 of zero, where the
    spectral structure lies),
    data with error bars, the reconstruction with its scatter band; and the residual
    in units of the error.

    Examples
    --------
    >>> plot_anomalies(arrays, out["reconstruction"], out["scatter"],
    ...                out["anomaly"], "anomalies.png")  # doctest: +SKIP
    PosixPath('anomalies.png')
    """
    score = np.where(np.isfinite(anomaly), anomaly, -np.inf)
    top = np.argsort(score)[::-1][: min(n, int(np.isfinite(anomaly).sum()))]
    fig = Figure(figsize=(12, 3.1 * max(len(top), 1) + 0.6), layout="constrained")
    panels = fig.subfigures(max(len(top), 1), 1, squeeze=False)[:, 0]
    index = np.arange(2 * N_BASES)
    bands = (("BP", slice(0, N_BASES), "tab:blue"), ("RP", slice(N_BASES, None), "tab:red"))
    for k, row in enumerate(top):
        upper, lower = panels[k].subplots(2, 1, sharex=True, height_ratios=[3, 1])
        x, sigma = arrays.coefficients[row], arrays.errors[row]
        x_hat, s = reconstruction[row], scatter[row]
        for band, part, colour in bands:
            upper.errorbar(index[part], x[part], sigma[part], fmt="o", ms=2.5, lw=0.8,
                           color=colour, label=f"{band} coefficients ± error")  # fmt: skip
            upper.fill_between(index[part], x_hat[part] - s[part], x_hat[part] + s[part],
                               color="0.55", alpha=0.45, lw=0)  # fmt: skip
            upper.plot(index[part], x_hat[part], color="k", lw=1)
            lower.plot(index[part], (x[part] - x_hat[part]) / sigma[part], "o", ms=2,
                       color=colour)  # fmt: skip
        upper.plot([], [], color="k", label="sVAE reconstruction (grey: ± scatter)")
        # linear where the spectral structure is; the flux-carrying first coefficients
        # of each band are compressed logarithmically
        linthresh = float(max(0.05, 5 * np.median(sigma)))
        upper.set_yscale("symlog", linthresh=linthresh, linscale=3.0)
        _symlog_ticks(upper, linthresh, np.concatenate([x, x_hat]))
        upper.set_ylabel("coefficient / flux proxy", fontsize=9)
        upper.set_title(
            f"source_id {arrays.source_id[row]}:  anomaly {anomaly[row]:.2f}  "
            f"(reconstruction chi2 per coefficient against errors + scatter),  "
            f"flux proxy {arrays.flux[row]:,.0f} e-/s",
            fontsize=9,
        )
        lower.axhline(0, color="k", lw=0.5)
        lower.set_ylabel("resid. / error", fontsize=8)
        lower.set_xlabel("coefficient index (0-54 BP, 55-109 RP)", fontsize=8)
        if k == 0:
            upper.legend(fontsize=8, loc="upper right", ncols=3)
    fig.suptitle(f"The {len(top)} most anomalous XP spectra and their sVAE reconstructions")
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
