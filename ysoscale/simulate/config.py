"""Configuration of a simulation run: what to draw, what to observe, how to chunk it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ysoscale.settings import reject_unknown_keys
from ysoscale.simulate.priors import PriorConfig
from ysoscale.simulate.surveys import SURVEYS

THETA_PARAMS: tuple[str, ...] = (
    "log10_mass",
    "log10_age",
    "mh",
    "distance_pc",
    "av",
    "rv",
    "teff",
    "logg",
    "log10_lum",
    "radius",
    "disk_frac",
    "disk_temp",
)
"""Parameter names of the training store's ``theta`` (ARCHITECTURE.md canonical names)."""

THETA_UNITS: dict[str, str] = {
    "log10_mass": "log10(M/Msun), initial mass",
    "log10_age": "log10(age/yr)",
    "mh": "dex, [M/H] on the PARSEC scale",
    "distance_pc": "pc",
    "av": "mag",
    "rv": "",
    "teff": "K",
    "logg": "dex (cgs)",
    "log10_lum": "log10(L/Lsun)",
    "radius": "Rsun",
    "disk_frac": "L_disk / L_star",
    "disk_temp": "K",
}


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated training store.

    Parameters
    ----------
    n : int
        Number of stars.
    seed : int
        Master seed; chunk ``i`` draws from ``SeedSequence([seed, i])``, so the store is
        bitwise identical for any number of workers.
    chunk_size : int
        Stars per task and per zarr chunk along ``star``.
    surveys : tuple of str
        Surveys that observe the stars (others leave their bands NaN).
    prior : PriorConfig
        What to draw (population, distances, ...).
    young_variability_mag : float
        Median extra photometric scatter of young (< 50 Myr) stars, lognormal with a
        0.5 dex-e width; added to noise and reported errors.
    require_detection : bool
        Keep only stars that some selected survey detected (draws are repeated until
        ``n`` are kept). The stored sample is then the prior *conditioned on being in a
        catalog*, which is what an estimator for catalog stars is trained on; the
        default (False) stores the prior itself, detected or not.
    brighter_than : float, optional
        Keep only stars whose noise-free magnitude in ``brighter_than_band`` is brighter
        than this (draws are repeated until ``n`` are kept): a magnitude-limited store.
        Only ~0.2 % of prior draws have G < 13.5, so a general store teaches the network
        little about bright stars (issue 4: the Kepler giants at Kp = 9-13). Mixed into
        training beside a general store (``ysoscale train --data ALL BRIGHT``), it adds
        bright stars without changing p(θ | x) for them: the cut is on a quantity the
        photometry measures to a few mmag.
    brighter_than_band : str
        Band of the cut (default ``gaia_g``).

    Examples
    --------
    >>> config = SimulationConfig(n=1000, seed=1, chunk_size=500, surveys=("gaia", "tmass"))
    >>> config.n_chunks
    2
    """

    n: int = 100_000
    seed: int = 0
    chunk_size: int = 100_000
    surveys: tuple[str, ...] = SURVEYS
    prior: PriorConfig = field(default_factory=PriorConfig)
    young_variability_mag: float = 0.1
    require_detection: bool = False
    brighter_than: float | None = None
    brighter_than_band: str = "gaia_g"

    def __post_init__(self) -> None:
        if isinstance(self.surveys, str):
            object.__setattr__(self, "surveys", tuple(s.strip() for s in self.surveys.split(",")))
        object.__setattr__(self, "surveys", tuple(self.surveys))
        unknown = [s for s in self.surveys if s not in SURVEYS]
        if unknown:
            raise ValueError(f"unknown survey(s) {unknown}; known: {', '.join(SURVEYS)}")
        if not self.surveys:
            raise ValueError("no surveys selected")
        if self.n < 1:
            raise ValueError(f"n must be positive, got {self.n}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        if self.young_variability_mag < 0:
            raise ValueError("young_variability_mag must be >= 0")
        from ysoscale.physics.passbands import BAND_IDS

        if self.brighter_than_band not in BAND_IDS:
            raise ValueError(
                f"brighter_than_band {self.brighter_than_band!r} is not a band id; "
                f"known: {', '.join(BAND_IDS)}"
            )

    @property
    def n_chunks(self) -> int:
        """Number of chunks (tasks) of the run."""
        return -(-self.n // self.chunk_size)

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        """First and one-past-last star of chunk ``index``."""
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.n)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable), stored in the store's attrs."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SimulationConfig:
        """Build from a dict (e.g. TOML), rejecting misspelled keys by name."""
        reject_unknown_keys(cls, values, "simulation")
        values = dict(values)
        if isinstance(values.get("prior"), Mapping):
            values["prior"] = PriorConfig.from_dict(values["prior"])
        if "surveys" in values and not isinstance(values["surveys"], str):
            values["surveys"] = tuple(values["surveys"])
        return cls(**values)
