"""Milky Way + young-population + dust prior (ysoscale.simulate.priors)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import integrate

from ysoscale.simulate.priors import (
    POPULATIONS,
    PRIOR_KEYS,
    Z_SUN_PC,
    PriorConfig,
    component_weights,
    kroupa_cdf,
    kroupa_log10_ppf,
    sample_prior,
)

N = 200_000
CONFIGS = {
    "default": PriorConfig(),
    "binaries": PriorConfig(binaries=True),
    "young": PriorConfig(population="young"),
    "field": PriorConfig(population="field"),
    "local": PriorConfig(max_distance_pc=500.0, main_sequence_only=True),
}


def binomial_tol(p: float, n: int) -> float:
    """Five standard errors of a fraction p estimated from n draws."""
    return 5 * math.sqrt(max(p * (1 - p), 1e-12) / n)


@pytest.fixture(scope="module")
def field() -> dict[str, np.ndarray]:
    return sample_prior(N, np.random.default_rng(1), PriorConfig(population="field"))


@pytest.fixture(scope="module")
def young() -> dict[str, np.ndarray]:
    return sample_prior(N, np.random.default_rng(2), PriorConfig(population="young"))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_contract_keys_dtypes_ranges(name: str) -> None:
    config = CONFIGS[name]
    n = 20_000
    theta = sample_prior(n, np.random.default_rng(3), config)
    expected = set(PRIOR_KEYS) | ({"mass_ratio"} if config.binaries else set())
    assert set(theta) == expected
    for key, value in theta.items():
        assert value.shape == (n,), key
        if key == "population":
            assert value.dtype == np.uint8
        elif key == "has_disk":
            assert value.dtype == np.bool_
        else:
            assert value.dtype == np.float64, key
        if key != "mass_ratio":
            assert np.all(np.isfinite(value)), key
    assert np.all((theta["mh"] >= -2.0) & (theta["mh"] <= 0.5))
    assert np.all(theta["av"] >= 0.0) and np.isfinite(theta["av"]).all()
    assert np.all((theta["rv"] >= 2.3) & (theta["rv"] <= 5.6))
    assert np.all(theta["distance_pc"] > 0)
    assert np.all(theta["distance_pc"] <= config.max_distance_pc)
    assert np.all((theta["l_deg"] >= 0) & (theta["l_deg"] < 360))
    assert np.all(np.abs(theta["b_deg"]) <= 90)
    assert np.all(theta["log10_age"] <= math.log10(13e9) + 1e-12)
    assert np.all(theta["log10_age"] >= math.log10(config.young_age_myr[0] * 1e6) - 1e-12)
    log_m = theta["log10_mass"]
    assert np.all(log_m >= math.log10(config.min_mass) - 1e-12)
    assert np.all(log_m <= math.log10(config.max_mass) + 1e-12)
    assert np.all(theta["population"] < len(POPULATIONS))
    disk = theta["has_disk"]
    lo, hi = config.disk_frac_range
    assert np.all((theta["disk_frac"][disk] >= lo) & (theta["disk_frac"][disk] <= hi))
    assert np.all(theta["disk_frac"][~disk] == 0)
    lo, hi = config.disk_temp_range_k
    assert np.all((theta["disk_temp"][disk] >= lo) & (theta["disk_temp"][disk] <= hi))
    if config.binaries:
        q = theta["mass_ratio"]
        binary = np.isfinite(q)
        assert 0 < binary.mean() < 1
        assert np.all((q[binary] > 0.1) & (q[binary] <= 1.0))
    if config.main_sequence_only:
        lifetime = 1e10 * (10.0**log_m) ** -2.5
        assert np.all(lifetime >= 10.0 ** theta["log10_age"] * (1 - 1e-9))


def test_same_seed_same_draws_and_different_seed_differs() -> None:
    a = sample_prior(5000, np.random.default_rng(7), CONFIGS["binaries"])
    b = sample_prior(5000, np.random.default_rng(7), CONFIGS["binaries"])
    c = sample_prior(5000, np.random.default_rng(8), CONFIGS["binaries"])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["distance_pc"], c["distance_pc"])
    assert not np.array_equal(a["log10_mass"], c["log10_mass"])


def test_zero_stars_and_bad_arguments() -> None:
    theta = sample_prior(0, np.random.default_rng(0))
    assert all(v.shape == (0,) for v in theta.values())
    with pytest.raises(ValueError, match="n must be"):
        sample_prior(-1, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        sample_prior(10, 0)  # type: ignore[arg-type]


def test_young_population_only_young_ages(young: dict[str, np.ndarray]) -> None:
    assert np.all(young["population"] == POPULATIONS.index("young"))
    age_myr = 10.0 ** young["log10_age"] / 1e6
    assert np.all((age_myr >= 0.5 * (1 - 1e-9)) & (age_myr <= 50.0 * (1 + 1e-9)))
    d = young["distance_pc"]
    # region centres lie in 100-3000 pc; stars scatter around them by a few pc
    assert np.quantile(d, 0.001) > 50 and np.quantile(d, 0.999) < 3100
    z = np.abs(d * np.sin(np.radians(young["b_deg"])) + Z_SUN_PC)
    assert np.median(z) < 100


def test_field_population_has_no_young_stars(field: dict[str, np.ndarray]) -> None:
    assert not np.any(field["population"] == POPULATIONS.index("young"))
    assert np.all(10.0 ** field["log10_age"] >= 50e6 * (1 - 1e-9))
    assert not np.any(field["has_disk"])


def test_population_shares_follow_weights() -> None:
    n = N
    theta = sample_prior(n, np.random.default_rng(4), PriorConfig(young_fraction=0.2))
    counts = np.bincount(theta["population"], minlength=len(POPULATIONS)) / n
    expected = np.append(0.8 * component_weights(15000.0), 0.2)
    for name, got, p in zip(POPULATIONS, counts, expected, strict=True):
        assert abs(got - p) < binomial_tol(p, n), name


def test_component_weights() -> None:
    w = component_weights(15000.0)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > w[3] > w[1] > w[2] > 0  # thin > bulge > thick > halo inside 15 kpc
    local = component_weights(500.0)
    assert local[0] > 0.8 and local[3] < 1e-3  # the solar neighbourhood is thin disk
    # local thick/thin between 0.04 (Bland-Hawthorn & Gerhard 2016) and 0.12 (Jurić et al. 2008)
    assert 0.04 < local[1] / local[0] < 0.15
    np.testing.assert_array_equal(w, component_weights(15000.0))  # fixed-seed, cached


def test_disk_fraction_follows_exponential_decay(young: dict[str, np.ndarray]) -> None:
    efold = PriorConfig().disk_efold_myr
    age_myr = 10.0 ** young["log10_age"] / 1e6
    has = young["has_disk"]
    edges = [0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (age_myr >= lo) & (age_myr < hi)
        n = int(sel.sum())
        assert n > 1000
        p = np.exp(-age_myr[sel] / efold)
        expected = p.mean()
        sigma = math.sqrt(np.sum(p * (1 - p))) / n
        assert abs(has[sel].mean() - expected) < 5 * sigma + 1e-12, (lo, hi)
    assert not np.any(has[age_myr > 40 * efold])


def test_disk_efold_is_configurable() -> None:
    config = PriorConfig(population="young", disk_efold_myr=10.0)
    theta = sample_prior(50_000, np.random.default_rng(5), config)
    age_myr = 10.0 ** theta["log10_age"] / 1e6
    p = np.exp(-age_myr / 10.0)
    n = age_myr.size
    assert abs(theta["has_disk"].mean() - p.mean()) < 5 * math.sqrt(np.sum(p * (1 - p))) / n


def test_scale_heights_thin_thick_halo(field: dict[str, np.ndarray]) -> None:
    z = np.abs(field["distance_pc"] * np.sin(np.radians(field["b_deg"])) + Z_SUN_PC)
    pop = field["population"]
    med = [np.median(z[pop == POPULATIONS.index(c)]) for c in ("thin", "thick", "halo")]
    assert med[0] < med[1] < med[2]


def test_metallicity_by_component(field: dict[str, np.ndarray]) -> None:
    pop = field["population"]
    mean = {c: field["mh"][pop == POPULATIONS.index(c)].mean() for c in POPULATIONS[:3]}
    assert mean["thin"] > mean["thick"] > mean["halo"]


def test_extinction_grows_in_the_plane_and_is_small_at_high_latitude(
    field: dict[str, np.ndarray],
) -> None:
    d, b, av = field["distance_pc"], np.abs(field["b_deg"]), field["av"]
    low = b < 2
    near = np.median(av[low & (d > 300) & (d < 1000)])
    mid = np.median(av[low & (d > 2000) & (d < 4000)])
    far = np.median(av[low & (d > 6000) & (d < 10000)])
    assert near < mid < far
    # high latitudes are rare in a 15 kpc sample; a 2 kpc one has plenty
    config = PriorConfig(population="field", max_distance_pc=2000.0)
    local = sample_prior(50_000, np.random.default_rng(10), config)
    high = np.abs(local["b_deg"]) > 60
    av = local["av"]
    assert high.sum() > 1000
    assert np.median(av[high]) < 0.2
    assert np.quantile(av[high], 0.99) < 0.6


def test_young_stars_are_more_extincted_and_have_more_high_rv(
    field: dict[str, np.ndarray], young: dict[str, np.ndarray]
) -> None:
    near_field = field["distance_pc"] < 3000
    assert np.median(young["av"]) > np.median(field["av"][near_field])
    high_young = np.mean(young["rv"] > 4.0)
    high_field = np.mean(field["rv"] > 4.0)
    assert high_young > high_field + binomial_tol(high_field, N)


def _kroupa_pdf(m: float) -> float:
    if m < 0.08:
        return (m / 0.08) ** -0.3
    if m < 0.5:
        return (m / 0.08) ** -1.3
    return (0.5 / 0.08) ** -1.3 * (m / 0.5) ** -2.3


def test_imf_fraction_below_half_solar_mass(field: dict[str, np.ndarray]) -> None:
    lo, hi = 0.08, 20.0
    below = integrate.quad(_kroupa_pdf, lo, 0.5)[0]
    total = below + integrate.quad(_kroupa_pdf, 0.5, hi, points=[1.0, 5.0])[0]
    p = below / total
    got = np.mean(field["log10_mass"] < math.log10(0.5))
    assert abs(got - p) < binomial_tol(p, N)
    assert kroupa_cdf(np.array(0.5), lo, hi) == pytest.approx(p, rel=1e-9)


def test_imf_inverse_cdf_round_trip() -> None:
    m = np.geomspace(0.011, 149.0, 200)
    u = kroupa_cdf(m, 0.01, 150.0)
    assert np.all(np.diff(u) > 0)
    np.testing.assert_allclose(kroupa_log10_ppf(u, 0.01, 150.0), np.log10(m), atol=1e-9)


def test_main_sequence_only_removes_dead_massive_stars() -> None:
    config = PriorConfig(population="field", main_sequence_only=True)
    theta = sample_prior(20_000, np.random.default_rng(6), config)
    halo = theta["population"] == POPULATIONS.index("halo")
    assert np.all(10.0 ** theta["log10_mass"][halo] < 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"population": "disk"}, "population"),
        ({"young_fraction": 1.5}, "young_fraction"),
        ({"rv_tail_young": -0.1}, "rv_tail_young"),
        ({"max_distance_pc": 0.0}, "max_distance_pc"),
        ({"max_distance_pc": math.inf}, "max_distance_pc"),
        ({"max_distance_pc": 80.0}, "young_distance_pc"),
        ({"young_distance_pc": (3000.0, 100.0)}, "young_distance_pc"),
        ({"young_age_myr": (5.0, 5.0)}, "young_age_myr"),
        ({"young_age_myr": (1.0, 20000.0)}, "young_age_myr"),
        ({"young_age_myr": (1.0,)}, "young_age_myr"),
        ({"disk_frac_range": (0.0, 0.3)}, "disk_frac_range"),
        ({"disk_efold_myr": -1.0}, "disk_efold_myr"),
        ({"min_mass": 0.5, "max_mass": 0.4}, "min_mass"),
        ({"max_mass": 500.0}, "max_mass"),
        ({"av_clump_sigma": -0.1}, "av_clump_sigma"),
    ],
)
def test_config_validation_names_the_bad_key(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PriorConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_and_round_trips() -> None:
    with pytest.raises(ValueError, match="'young_fracton'.*young_fraction"):
        PriorConfig.from_dict({"young_fracton": 0.2})
    with pytest.raises(ValueError, match="'bogus'"):
        PriorConfig.from_dict({"population": "young", "bogus": 1})
    config = PriorConfig.from_dict({"young_age_myr": [1, 10], "binaries": True})
    assert config.young_age_myr == (1.0, 10.0)
    assert PriorConfig.from_dict(config.to_dict()) == config


def test_benchmark_draws_per_second() -> None:
    """Throughput, printed (run with -s); the target is >= 2e6 draws/s per core."""
    rng = np.random.default_rng(9)
    n = 1_000_000
    sample_prior(1000, rng)
    for name in ("default", "binaries", "young", "local"):
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            sample_prior(n, rng, CONFIGS[name])
            best = min(best, time.perf_counter() - start)
        print(f"sample_prior[{name}]: {n / best:.3g} draws/s")
