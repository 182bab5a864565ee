"""``benchmarks/calibration.py``: the distance check by parallax S/N."""

from __future__ import annotations

import numpy as np

from tests.validate import load_benchmark


def test_distance_by_parallax_snr_finds_the_biased_bin(monkeypatch) -> None:
    """Posteriors exact below S/N 100 and shifted by +0.7 mag above: the table says so,
    per bin, and leaves out stars without a parallax."""
    calibration = load_benchmark("calibration", monkeypatch)
    rng = np.random.default_rng(0)
    n, n_samples = 4000, 64
    truth = rng.normal(10.0, 2.0, (n, 2))
    parallax_error = np.full(n, 0.02)
    snr = 10 ** rng.uniform(0, 3, n)
    parallax = snr * parallax_error
    parallax[:100] = np.nan
    centre = truth + rng.normal(0.0, 0.1, (n, 2))  # calibrated: truth ~ N(centre, 0.1)
    samples = centre[:, None, :] + rng.normal(0.0, 0.1, (n, n_samples, 2))
    shifted = snr >= 100
    samples[shifted, :, 1] += 0.7
    out = calibration._by_parallax_snr(
        samples, truth, ["teff", "distance_modulus"], parallax, parallax_error
    )["distance_modulus"]
    assert sum(b["n"] for b in out.values()) == np.isfinite(parallax).sum()
    assert abs(out["100-inf"]["bias"] - 0.7) < 0.02
    for key in ("5-20", "20-100"):
        assert abs(out[key]["bias"]) < 0.02
        assert out[key]["max_coverage_error"] < 0.06  # binomial scatter of ~600 stars
    assert out["100-inf"]["max_coverage_error"] > 0.5
