"""HDBSCAN populations in the latent and the assignment of new stars."""

from __future__ import annotations

import numpy as np
import pytest

from ysoscale.xp.populations import NO_XP, NOISE, Populations, fit_populations


@pytest.fixture
def blobs(rng):
    centres = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    points = np.concatenate([rng.normal(c, 0.2, (80, 3)) for c in centres])
    return np.concatenate([points, rng.uniform(-2, 5, (20, 3))])


def test_the_sample_is_assigned_its_own_populations(blobs):
    pops = fit_populations(blobs, min_cluster_size=20, min_samples=5)
    assert pops.n_populations == 3
    assert (pops.assign(blobs) == pops.labels).mean() > 0.97


def test_new_stars_join_the_nearest_dense_population(blobs, rng):
    pops = fit_populations(blobs, min_cluster_size=20, min_samples=5)
    centre_labels = pops.assign(np.array([[0.0, 0, 0], [3.0, 0, 0], [0.0, 3, 1]]))
    assert sorted(centre_labels.tolist()) == [0, 1, 2]
    near = pops.assign(rng.normal([3.0, 0.0, 0.0], 0.1, (30, 3)))
    assert (near == centre_labels[1]).all()
    far = pops.assign(np.array([[50.0, 50.0, 50.0], [np.nan, 0.0, 0.0]]))
    assert far.tolist() == [NOISE, NO_XP]


def test_save_load_gives_the_same_assignment(tmp_path, blobs, rng):
    pops = fit_populations(blobs, min_cluster_size=20, min_samples=5)
    pops.save(tmp_path)
    again = Populations.load(tmp_path)
    probe = rng.uniform(-1, 4, (200, 3))
    np.testing.assert_array_equal(pops.assign(probe), again.assign(probe))
    assert again.counts() == pops.counts()


def test_too_few_stars_is_a_clear_error():
    with pytest.raises(ValueError, match="3 finite latents"):
        fit_populations(np.zeros((3, 2)), min_cluster_size=10)
