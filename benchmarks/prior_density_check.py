"""How well the shipped prior density's one-dimensional conditionals match the prior.

For fresh draws of the training prior, the probability integral transform of each
parameter under the density's conditional ``p(theta_j | theta_rest)`` (computed by
numerical integration along ``theta_j`` on a grid uniform in the density's logit
coordinate, so that sharp edges and the A_V ~ 0 peak are resolved), split into young
(< 50 Myr) and field stars: the worst |coverage - expected| of central intervals at the 10
levels of :data:`ysoscale.validate.LEVELS`, signed. A perfect density gives only the
sampling scatter (2σ ≈ 2·sqrt(c(1-c)/n)). Importance sampling's weighted posterior
inherits these errors wherever the data say little (R_V, [M/H] from Gaia alone).

    python benchmarks/prior_density_check.py [--density DIR] [--compare DIR] [--n 6000]
        [--population all|young|field] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from ysoscale.infer.prior_density import (
    PriorDensity,
    default_prior_density_path,
    prior_draws,
)
from ysoscale.nn.config import PHYSICAL_PARAMS
from ysoscale.simulate.priors import PriorConfig
from ysoscale.validate import LEVELS

YOUNG_BELOW = PriorConfig().young_below_log10_age
"""Young regions end here and the thin disk starts (log10 yr)."""


def conditional_pit(
    density: PriorDensity, theta: torch.Tensor, j: int, grid_size: int
) -> np.ndarray:
    """``P(theta_j' <= theta_j | rest)`` under ``density`` for each row of ``theta``."""
    lo, hi = float(density.lo[j]), float(density.hi[j])
    logit = torch.linspace(-14.0, 14.0, grid_size, dtype=torch.float64)
    grid = (lo + (hi - lo) * torch.sigmoid(logit)).float()
    width = torch.as_tensor(np.gradient(grid.double().numpy()))
    out = np.empty(len(theta))
    with torch.no_grad():
        for s in range(0, len(theta), 256):
            rows = theta[s : s + 256]
            x = rows[:, None, :].repeat(1, grid_size, 1)
            x[..., j] = grid
            log_p = density.log_prob(x).double() + width.log()
            mass = torch.softmax(log_p, dim=-1).numpy()
            cdf = np.cumsum(mass, axis=1) - 0.5 * mass  # mid-cell CDF
            for i, value in enumerate(rows[:, j].numpy()):
                out[s + i] = np.interp(value, grid.numpy(), cdf[i])
    return out


def report(density: PriorDensity, theta: torch.Tensor, grid_size: int) -> dict[str, float]:
    """Print the table; return the worst signed error per ``param/population``."""
    worst = {}
    young = (theta[:, 1] < YOUNG_BELOW).numpy()
    print(f"  {'param':<16}{'stars':<8}{'n':>6}  worst |cov-exp| (signed, level)  2σ at 0.5")
    for j, name in enumerate(density.params):
        u = conditional_pit(density, theta, j, grid_size)
        for label, sel in (("young", young), ("field", ~young)):
            if not sel.any():  # --population young or field
                continue
            err = np.array([np.mean(np.abs(u[sel] - 0.5) <= c / 2) for c in LEVELS]) - LEVELS
            k = int(np.abs(err).argmax())
            worst[f"{name}/{label}"] = round(float(err[k]), 4)
            print(f"  {name:<16}{label:<8}{int(sel.sum()):>6}  {abs(err[k]):.3f} "
                  f"({err[k]:+.3f} at {LEVELS[k]:.2f})"
                  f"{'':>14}±{2 * math.sqrt(0.25 / sel.sum()):.3f}")  # fmt: skip
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", default=str(default_prior_density_path()))
    parser.add_argument("--compare", default=None, help="a second density, same draws")
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--grid", type=int, default=256)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--population", default="all", choices=["all", "young", "field"],
                        help="draw from one population only (young: 10x the young stars "
                        "of --population all's draws)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1000 draws")
    args = parser.parse_args()
    if args.quick:
        args.n = 1000
    summary: dict[str, object] = {"n": args.n, "grid": args.grid, "population": args.population}
    prior = PriorConfig(population=args.population)
    theta, _ = prior_draws(args.n, PHYSICAL_PARAMS, np.random.default_rng(args.seed), prior)
    theta = torch.as_tensor(theta, dtype=torch.float32)
    for path in [args.density] + ([args.compare] if args.compare else []):
        density = PriorDensity.load(path)
        assert density.params == PHYSICAL_PARAMS, density.params
        exact = density.card.get("exact_factors", ["rv"] if density.rv_factor else [])
        kind = f"parts {[p.name for p in density.parts]}, exact {exact or 'none'}"
        with torch.no_grad():
            nll = float(-density.log_prob(theta).double().mean())
        print(f"\n{path} ({kind}): NLL {nll:.4f} nats on {args.n} fresh draws "
              f"(population {args.population})")  # fmt: skip
        summary[path] = {"nll": round(nll, 4), "worst_signed": report(density, theta, args.grid)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
