"""The per-chunk simulation kernel: θ from the priors → magnitudes → survey observations.

:func:`simulate_chunk` is pure: given a random generator, a configuration and a
:class:`~ysoscale.physics.forward.ForwardModel`, it returns plain numpy arrays. It knows
nothing of Dask or zarr; :mod:`ysoscale.simulate.run` fans it out and writes the results.
"""

from __future__ import annotations

import math

import numpy as np

from ysoscale.physics.forward import ForwardModel
from ysoscale.physics.passbands import BAND_IDS
from ysoscale.simulate.config import THETA_PARAMS, SimulationConfig
from ysoscale.simulate.priors import sample_prior
from ysoscale.simulate.surveys import SURVEYS, galactic_to_icrs, observe

MAX_DRAW_ROUNDS = 50
MAX_DRAWS_PER_ROUND = 2_000_000  # bounds memory (28 bands × float64) under a magnitude cut
YOUNG_AGE_LOG10_YR = math.log10(50e6)


def _combine_binary(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Magnitude of two unresolved stars (NaN secondaries contribute nothing)."""
    secondary_flux = np.where(np.isfinite(secondary), 10.0 ** (-0.4 * secondary), 0.0)
    return -2.5 * np.log10(10.0 ** (-0.4 * primary) + secondary_flux)


def _draw_valid_stars(
    n: int, rng: np.random.Generator, config: SimulationConfig, model: ForwardModel
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw from the prior until ``n`` stars have valid photometry (alive, inside grids).

    Rejection keeps the prior's shape over the region the models cover; the acceptance
    rate is reported by the caller's statistics, never silently padded.
    """
    kept: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    total, drawn = 0, 0
    cut = config.brighter_than
    cut_column = BAND_IDS.index(config.brighter_than_band)
    # a magnitude cut keeps ~0.01-1 % of draws: full-size rounds, and more of them
    rounds = MAX_DRAW_ROUNDS if cut is None else 20 * MAX_DRAW_ROUNDS
    for _ in range(rounds):
        want = n - total
        if cut is None:
            acceptance = max(total / drawn, 0.05) if drawn else 0.8
            batch = min(int(want / acceptance * 1.05) + 64, MAX_DRAWS_PER_ROUND)
        else:  # a first look of 2e5 draws, then as many as the acceptance needs
            acceptance = max(total / drawn, 1e-5) if drawn else None
            guess = 200_000 if acceptance is None else int(want / acceptance * 1.2) + 1000
            batch = min(guess, MAX_DRAWS_PER_ROUND)
        drawn += batch
        draws = sample_prior(batch, rng, config.prior)
        phot = model.physical(
            draws["log10_mass"],
            draws["log10_age"],
            draws["mh"],
            draws["distance_pc"],
            draws["av"],
            draws["rv"],
            disk_frac=draws["disk_frac"],
            disk_temp=draws["disk_temp"],
        )
        mags = phot.mag.astype(np.float64)
        if "mass_ratio" in draws:
            single = ~np.isfinite(draws["mass_ratio"])
            q = np.where(single, 1.0, draws["mass_ratio"])
            companion = model.physical(
                draws["log10_mass"] + np.log10(q),
                draws["log10_age"],
                draws["mh"],
                draws["distance_pc"],
                draws["av"],
                draws["rv"],
            )
            secondary = np.where((single | ~companion.valid)[:, None], np.nan, companion.mag)
            mags = _combine_binary(mags, secondary)
        usable = phot.valid & np.isfinite(mags).all(axis=1)
        if cut is not None:
            usable &= mags[:, cut_column] < cut
        good = np.flatnonzero(usable)[:want]
        derived = {
            "teff": phot.teff,
            "logg": phot.logg,
            "log10_lum": phot.log10_lum,
            "radius": phot.radius,
        }
        selected = {k: np.asarray(v)[good] for k, v in (draws | derived).items()}
        kept.append((selected, mags[good]))
        total += good.size
        if total == n:
            break
    else:
        raise RuntimeError(
            f"only {total} of {n} prior draws had valid photometry"
            + (f" and {config.brighter_than_band} < {cut}" if cut is not None else "")
            + f" after {rounds} rounds ({drawn:,} draws); the prior reaches far "
            "outside the model grids or the magnitude cut keeps too few stars"
        )
    keys = kept[0][0].keys()
    merged = {k: np.concatenate([part[k] for part, _ in kept]) for k in keys}
    return merged, np.concatenate([m for _, m in kept])


def young_variability(
    log10_age: np.ndarray, config: SimulationConfig, rng: np.random.Generator
) -> np.ndarray:
    """Extra photometric scatter (mag) of stars younger than 50 Myr: lognormal around
    ``config.young_variability_mag`` (0.5 e-fold width), 0 for older stars."""
    scatter = config.young_variability_mag * rng.lognormal(0.0, 0.5, len(log10_age))
    return np.where(log10_age < YOUNG_AGE_LOG10_YR, scatter, 0.0)


def simulate_chunk(
    n: int, rng: np.random.Generator, config: SimulationConfig, model: ForwardModel
) -> dict[str, np.ndarray]:
    """Simulate ``n`` stars (with ``config.require_detection``: ``n`` stars that at least
    one survey detected, drawn until there are enough).

    Returns
    -------
    dict of numpy arrays
        ``theta (n, param)`` in :data:`THETA_PARAMS` order (float32), ``mag_true``,
        ``mag``, ``mag_err`` ``(n, band)`` in ``BAND_IDS`` order (float32; NaN where a
        survey did not observe the star), ``parallax_true``, ``parallax``,
        ``parallax_error`` (mas), ``l``, ``b``, ``ra``, ``dec`` (deg), ``population``
        (uint8), ``has_disk`` (bool), ``detected (n, survey)`` (bool).

    Examples
    --------
    >>> model = ForwardModel.default()  # doctest: +SKIP
    >>> rng = np.random.default_rng(0)
    >>> out = simulate_chunk(1000, rng, SimulationConfig(), model)  # doctest: +SKIP
    >>> out["mag"].shape  # doctest: +SKIP
    (1000, 28)
    """
    if tuple(model.bands) != BAND_IDS:
        raise ValueError("the simulator needs a ForwardModel over all bands in BAND_IDS order")
    if not config.require_detection:
        return _observed_stars(n, rng, config, model)
    parts, total, drawn = [], 0, 0
    for _ in range(MAX_DRAW_ROUNDS):
        want = n - total
        # a magnitude-limited sample is bright: nearly all of it is detected
        first_guess = 0.1 if config.brighter_than is None else 1.0
        acceptance = max(total / drawn, 0.005) if drawn else first_guess
        batch = int(want / acceptance * 1.1) + 256
        drawn += batch
        part = _observed_stars(batch, rng, config, model)
        keep = np.flatnonzero(part["detected"].any(axis=1))[:want]
        parts.append({name: values[keep] for name, values in part.items()})
        total += keep.size
        if total == n:
            return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    raise RuntimeError(
        f"only {total} of {n} stars were detected by {config.surveys} after {drawn} draws"
    )


def _observed_stars(
    n: int, rng: np.random.Generator, config: SimulationConfig, model: ForwardModel
) -> dict[str, np.ndarray]:
    """``n`` stars with valid photometry, observed by the surveys (detected or not)."""
    stars, true_mag = _draw_valid_stars(n, rng, config, model)
    variability = young_variability(stars["log10_age"], config, rng)
    parallax_true = 1000.0 / stars["distance_pc"]
    seen = observe(
        true_mag,
        stars["l_deg"],
        stars["b_deg"],
        parallax_true,
        rng,
        surveys=config.surveys,
        variability=variability,
    )
    ra, dec = galactic_to_icrs(stars["l_deg"], stars["b_deg"])
    theta = np.column_stack([stars[p] for p in THETA_PARAMS]).astype(np.float32)
    return {
        "theta": theta,
        "mag_true": true_mag.astype(np.float32),
        "mag": seen.mag.astype(np.float32),
        "mag_err": seen.mag_err.astype(np.float32),
        "parallax_true": parallax_true.astype(np.float32),
        "parallax": seen.parallax.astype(np.float32),
        "parallax_error": seen.parallax_error.astype(np.float32),
        "l": stars["l_deg"].astype(np.float64),
        "b": stars["b_deg"].astype(np.float64),
        "ra": np.asarray(ra, dtype=np.float64),
        "dec": np.asarray(dec, dtype=np.float64),
        "population": stars["population"].astype(np.uint8),
        "has_disk": stars["has_disk"].astype(bool),
        "detected": _detected_by_survey(seen.detected, config),
    }


def _detected_by_survey(detected: np.ndarray, config: SimulationConfig) -> np.ndarray:
    """Detection flags over all of :data:`SURVEYS` (False for surveys not simulated)."""
    detected = np.asarray(detected, dtype=bool)
    if detected.shape[1] == len(SURVEYS):
        return detected
    full = np.zeros((detected.shape[0], len(SURVEYS)), dtype=bool)
    for column, name in enumerate(config.surveys):
        full[:, SURVEYS.index(name)] = detected[:, column]
    return full
