"""Populations in the XP latent space: HDBSCAN on a sample, then assignment of any star.

:func:`fit_populations` runs scikit-learn's HDBSCAN on the latents of a sample (the
training stars). :meth:`Populations.assign` then places any other star, the way
HDBSCAN's own ``approximate_predict`` does in the ``hdbscan`` package (scikit-learn's
HDBSCAN has no predict):

* its core distance is the distance to its ``min_samples``-th nearest sample star;
* it joins the sample star nearest in *mutual reachability*,
  ``max(core(x), core(j), d(x, j))`` (ties go to the nearer star in plain distance),
  and takes that star's population;
* it is noise (-1) if that star is noise, or if the reachability exceeds the largest
  core distance among the population's members (it lies outside the density level at
  which the population exists).

Assignment is a pure function of the saved sample, so every partition of a distributed
run assigns the same way. Saved as safetensors + JSON, never pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

POPULATIONS_FILE = "populations.safetensors"
POPULATIONS_CARD = "populations.json"
NOISE = -1
NO_XP = -2
"""Population code of rows without a usable XP spectrum (and padding rows)."""


@dataclass
class Populations:
    """A clustered latent sample and the rule that assigns new stars to it.

    Attributes
    ----------
    points : ndarray, (m, latent) float32
        Latents of the sample.
    labels : ndarray, (m,) int64
        HDBSCAN population of each sample star (-1: noise).
    core_distance : ndarray, (m,) float64
        Distance of each sample star to its ``min_samples``-th nearest sample star.
    threshold : ndarray, (n_populations,) float64
        Largest member core distance of each population.
    min_cluster_size, min_samples : int
        The HDBSCAN settings used.
    """

    points: np.ndarray
    labels: np.ndarray
    core_distance: np.ndarray
    threshold: np.ndarray
    min_cluster_size: int
    min_samples: int
    _tree: Any = field(default=None, repr=False, compare=False)

    @property
    def n_populations(self) -> int:
        return len(self.threshold)

    def counts(self) -> dict[str, int]:
        """Sample stars per population (and noise)."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {
            ("noise" if v == NOISE else str(v)): int(c) for v, c in zip(values, counts, strict=True)
        }

    def _neighbours(self):
        if self._tree is None:
            from sklearn.neighbors import NearestNeighbors

            self._tree = NearestNeighbors().fit(self.points.astype(np.float64))
        return self._tree

    def assign(self, latent: np.ndarray, *, candidates: int | None = None) -> np.ndarray:
        """Population of each row of ``latent`` (``(n, latent)``); -1 noise, -2 for NaN rows.

        Parameters
        ----------
        latent : ndarray
        candidates : int, optional
            Sample stars (nearest in plain distance) searched for the smallest mutual
            reachability; default ``4 * min_samples``.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> blobs = np.concatenate([rng.normal(0, 0.1, (60, 2)), rng.normal(3, 0.1, (60, 2))])
        >>> pops = fit_populations(blobs, min_cluster_size=20)
        >>> pops.assign(np.array([[0.0, 0.0], [3.0, 3.0], [20.0, 20.0], [np.nan, 0.0]])).tolist()
        [0, 1, -1, -2]
        """
        latent = np.asarray(latent, dtype=np.float64)
        out = np.full(len(latent), NO_XP, dtype=np.int16)
        ok = np.isfinite(latent).all(axis=1)
        if not ok.any():
            return out
        m = len(self.points)
        k = min(m, candidates or 4 * self.min_samples)
        distance, index = self._neighbours().kneighbors(latent[ok], n_neighbors=k)
        core = distance[:, min(self.min_samples, k) - 1]
        reach = np.maximum(np.maximum(distance, core[:, None]), self.core_distance[index])
        # argmin takes the first of equal reachabilities: the nearest (distance is sorted)
        best = np.argmin(reach, axis=1)
        rows = np.arange(len(best))
        nearest = index[rows, best]
        label = self.labels[nearest].astype(np.int64)
        thresholds = np.append(self.threshold, -np.inf)  # label -1 reads the last: -inf
        limit = thresholds[label]
        label[reach[rows, best] > limit] = NOISE
        out[ok] = label
        return out

    def save(self, path_dir: str | Path) -> Path:
        """Write ``populations.safetensors`` and ``populations.json`` into ``path_dir``."""
        path = Path(path_dir)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {
            "points": np.ascontiguousarray(self.points, dtype=np.float32),
            "labels": np.ascontiguousarray(self.labels, dtype=np.int64),
            "core_distance": np.ascontiguousarray(self.core_distance, dtype=np.float64),
            "threshold": np.ascontiguousarray(self.threshold, dtype=np.float64),
        }
        save_file(arrays, str(path / POPULATIONS_FILE))
        card = {
            "method": "sklearn.cluster.HDBSCAN on the sample latents; new stars by mutual "
            "reachability to the sample (see ysoscale.xp.populations)",
            "min_cluster_size": self.min_cluster_size,
            "min_samples": self.min_samples,
            "n_populations": self.n_populations,
            "counts": self.counts(),
        }
        (path / POPULATIONS_CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path_dir: str | Path) -> Populations:
        """Read :meth:`save` output.

        Raises
        ------
        FileNotFoundError
            If ``path_dir`` has no saved populations.
        """
        path = Path(path_dir)
        if not (path / POPULATIONS_FILE).exists():
            raise FileNotFoundError(f"no {POPULATIONS_FILE} in {path}")
        arrays = load_file(str(path / POPULATIONS_FILE))
        card = json.loads((path / POPULATIONS_CARD).read_text())
        return cls(
            arrays["points"],
            arrays["labels"],
            arrays["core_distance"],
            arrays["threshold"],
            int(card["min_cluster_size"]),
            int(card["min_samples"]),
        )


def fit_populations(
    latent: np.ndarray,
    *,
    min_cluster_size: int = 15,
    min_samples: int | None = 5,
) -> Populations:
    """HDBSCAN (scikit-learn) on the finite rows of ``latent``.

    Parameters
    ----------
    latent : ndarray, (m, latent)
    min_cluster_size : int
        Smallest population.
    min_samples : int, optional
        Density neighbourhood (stars, the star itself included); ``None``:
        ``min_cluster_size``.

    Raises
    ------
    ValueError
        If fewer finite rows than ``min_cluster_size`` are given.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> blobs = np.concatenate([rng.normal(0, 0.1, (50, 3)), rng.normal(2, 0.1, (50, 3))])
    >>> fit_populations(blobs, min_cluster_size=15).n_populations
    2
    """
    from sklearn.cluster import HDBSCAN
    from sklearn.neighbors import NearestNeighbors

    points = np.asarray(latent, dtype=np.float32)  # the precision they are saved with
    points = points[np.isfinite(points).all(axis=1)].astype(np.float64)
    min_samples = min_samples or min_cluster_size
    if len(points) < max(min_cluster_size, min_samples):
        raise ValueError(
            f"{len(points)} finite latents cannot form populations of >= {min_cluster_size}"
        )
    clusterer = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
    labels = clusterer.fit(points).labels_
    distance, _ = NearestNeighbors().fit(points).kneighbors(points, n_neighbors=min_samples)
    core = distance[:, -1]
    n_pop = int(labels.max()) + 1 if (labels >= 0).any() else 0
    threshold = np.array([core[labels == c].max() for c in range(n_pop)], dtype=np.float64)
    return Populations(
        points.astype(np.float32), labels.astype(np.int64), core, threshold,
        min_cluster_size, min_samples,
    )  # fmt: skip


__all__ = ["NOISE", "NO_XP", "Populations", "fit_populations"]
