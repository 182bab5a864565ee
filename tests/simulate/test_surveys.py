"""Tests of the survey observation models (ysoscale.simulate.surveys).

Statistical tolerances are set from the sample size (binomial or Gaussian standard errors,
5σ), and every test is seeded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ysoscale.physics.passbands import BAND_IDS
from ysoscale.simulate.surveys import (
    GALACTIC_TO_ICRS,
    SURVEY_MODELS,
    SURVEYS,
    Observation,
    SurveyModel,
    gaia_parallax_error,
    galactic_to_icrs,
    observe,
)

NB = len(BAND_IDS)
# (l, b) of RA = 20 deg, Dec = 0 deg: inside every survey's footprint (Stripe 82 for SDSS).
L_ALL, B_ALL = 138.29407735517495, -62.016843090516154
ALL_BANDS = [(s, b) for s in SURVEYS for b in SURVEY_MODELS[s].bands]


def _everywhere(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, L_ALL), np.full(n, B_ALL)


def _random_sky(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0.0, 360.0, n), np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))


def _comfortable_mags(n: int) -> np.ndarray:
    """True magnitudes that every band of every survey detects almost surely."""
    mags = np.empty((n, NB))
    for model in SURVEY_MODELS.values():
        for j, band in enumerate(model.bands):
            mags[:, BAND_IDS.index(band)] = model.faint_limit[j] - 2.5
    return mags


def _band_param(band: str, attr: str) -> float:
    for model in SURVEY_MODELS.values():
        if band in model.bands:
            return getattr(model, attr)[model.bands.index(band)]
    raise KeyError(band)


def test_models_cover_every_band_once():
    assert tuple(SURVEY_MODELS) == SURVEYS
    bands = [b for s in SURVEYS for b in SURVEY_MODELS[s].bands]
    assert sorted(bands) == sorted(BAND_IDS)
    for name, model in SURVEY_MODELS.items():
        assert model.name == name
        assert model.reference
        assert np.all(np.asarray(model.bright_limit) < np.asarray(model.faint_limit))


def test_model_validation_rejects_bad_config():
    model = SURVEY_MODELS["ps1"]
    with pytest.raises(ValueError, match="faint_limit"):
        dataclasses.replace(model, faint_limit=model.faint_limit[:-1])
    with pytest.raises(ValueError, match="unknown band"):
        dataclasses.replace(model, bands=("ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_w"))
    with pytest.raises(ValueError, match="bright_limit"):
        dataclasses.replace(model, bright_limit=(30.0,) * 5)
    with pytest.raises(ValueError, match="detection_bands"):
        dataclasses.replace(model, detection_bands=("gaia_g",))
    with pytest.raises(ValueError, match="unknown surveys"):
        observe(np.zeros((1, NB)), [0.0], [0.0], [1.0], np.random.default_rng(0), surveys=("x",))
    with pytest.raises(ValueError, match="shape"):
        observe(np.zeros((1, NB - 1)), [0.0], [0.0], [1.0], np.random.default_rng(0))


def test_shapes_dtypes_and_missing_values():
    rng = np.random.default_rng(1)
    n = 20_000
    true_mag = rng.uniform(-1.0, 26.0, (n, NB))
    true_mag[rng.random((n, NB)) < 0.05] = np.nan
    l_deg, b_deg = _random_sky(n, rng)
    obs = observe(true_mag, l_deg, b_deg, rng.uniform(0.1, 3.0, n), rng)
    assert isinstance(obs, Observation)
    assert obs.surveys == SURVEYS
    assert obs.mag.shape == obs.mag_err.shape == (n, NB)
    assert obs.mag.dtype == obs.mag_err.dtype == np.float32
    assert obs.parallax.shape == obs.parallax_error.shape == (n,)
    assert obs.parallax.dtype == obs.parallax_error.dtype == np.float32
    assert obs.detected.shape == (n, len(SURVEYS)) and obs.detected.dtype == bool

    observed = np.isfinite(obs.mag)
    np.testing.assert_array_equal(observed, np.isfinite(obs.mag_err))
    np.testing.assert_array_equal(observed, obs.observed)
    assert np.all(obs.mag_err[observed] > 0)
    # Non-detections are NaN, never 0, 99 or inf.
    assert not np.any(np.isinf(obs.mag))
    assert not np.any(np.isinf(obs.mag_err))
    assert 0.2 < observed.mean() < 0.8
    # Missing true magnitudes are never observed.
    assert not np.any(observed & np.isnan(true_mag))
    # A band is observed only if its survey detected the star, and vice versa.
    for i, name in enumerate(SURVEYS):
        cols = [BAND_IDS.index(b) for b in SURVEY_MODELS[name].bands]
        np.testing.assert_array_equal(observed[:, cols].any(axis=1), obs.detected[:, i])
    np.testing.assert_array_equal(np.isfinite(obs.parallax), np.isfinite(obs.parallax_error))
    assert np.all(obs.parallax_error[np.isfinite(obs.parallax_error)] > 0)


def test_deterministic_by_seed():
    rng = np.random.default_rng(2)
    n = 40_000  # several internal blocks
    true_mag = rng.uniform(5.0, 24.0, (n, NB))
    l_deg, b_deg = _random_sky(n, rng)
    plx = rng.uniform(0.1, 3.0, n)
    var = rng.uniform(0.0, 0.3, n)

    def run(seed):
        return observe(true_mag, l_deg, b_deg, plx, np.random.default_rng(seed), variability=var)

    a, b, c = run(7), run(7), run(8)
    for field in ("mag", "mag_err", "parallax", "parallax_error", "detected"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.mag, c.mag, equal_nan=True)


@pytest.mark.parametrize(("survey", "band"), ALL_BANDS)
def test_completeness_and_saturation(survey, band):
    rng = np.random.default_rng(100 + BAND_IDS.index(band))
    model = SURVEY_MODELS[survey]
    j = model.bands.index(band)
    col = BAND_IDS.index(band)
    faint, bright = model.faint_limit[j], model.bright_limit[j]
    test_mags = np.array([bright - 0.1, faint - 1.5, faint, faint + 0.2, faint + 1.5])
    n_each = 20_000
    n = n_each * test_mags.size
    # Other bands comfortably detected so the survey itself is always detected; the
    # tested band's own completeness is what is measured.
    true_mag = _comfortable_mags(n)
    true_mag[:, col] = np.repeat(test_mags, n_each)
    l_deg, b_deg = _everywhere(n)
    obs = observe(true_mag, l_deg, b_deg, np.ones(n), rng, surveys=(survey,))
    frac = np.isfinite(obs.mag[:, col]).reshape(test_mags.size, n_each).mean(axis=1)

    p_model = np.array(
        [
            model.detection_probability(np.where(np.arange(len(model.bands)) == j, m, 15.0))[j]
            for m in test_mags
        ]
    )
    tol = 5 * np.sqrt(p_model * (1 - p_model) / n_each) + 1e-9
    np.testing.assert_array_less(np.abs(frac - p_model), tol + 1e-12)
    assert frac[0] == 0.0  # saturated: never detected
    assert frac[1] > 0.99  # well above the limit
    assert abs(frac[2] - 0.5) < 5 * np.sqrt(0.25 / n_each)  # 50 % at the limit
    assert frac[4] < 0.01  # well below the limit
    assert frac[2] > frac[3] > frac[4]


def test_detection_probability_contract():
    for model in SURVEY_MODELS.values():
        nb = len(model.bands)
        at_limit = model.detection_probability(np.asarray(model.faint_limit)[None, :])
        np.testing.assert_allclose(at_limit, 0.5)
        saturated = model.detection_probability(np.asarray(model.bright_limit)[None, :] - 0.01)
        assert np.all(saturated == 0.0)
        assert np.all(model.detection_probability(np.full((1, nb), np.nan)) == 0.0)


@pytest.mark.parametrize(("survey", "band"), ALL_BANDS)
def test_error_at_faint_limit_and_floor(survey, band):
    model = SURVEY_MODELS[survey]
    j = model.bands.index(band)
    col = BAND_IDS.index(band)
    rng = np.random.default_rng(col)
    n = 20_000
    true_mag = _comfortable_mags(n)
    half = n // 2
    true_mag[:half, col] = model.snr5_mag[j]  # S/N = 5 by definition of the law
    true_mag[half:, col] = model.bright_limit[j] + 0.5
    l_deg, b_deg = _everywhere(n)
    if model.snr5_mag[j] > model.faint_limit[j] + 1.0:
        # Gaia G: detection, not S/N, limits the catalog; test the law directly.
        err_lim = model.magnitude_error(np.asarray(model.snr5_mag)[None, :])[0, j]
        assert err_lim == pytest.approx(np.hypot(0.2171, model.error_floor[j]), rel=1e-3)
    else:
        obs = observe(
            true_mag[:half], l_deg[:half], b_deg[:half], np.ones(half), rng, surveys=(survey,)
        )
        err = obs.mag_err[:, col]
        err = err[np.isfinite(err)]
        assert err.size > 0.3 * half
        # 5σ depth: σ = 1.0857 / 5 = 0.217 mag (plus the floor in quadrature)
        expected = np.hypot(2.5 / np.log(10) / 5, model.error_floor[j])
        assert np.median(err) == pytest.approx(expected, rel=0.05)
        assert 0.18 < np.median(err) < 0.26
    obs = observe(
        true_mag[half:], l_deg[half:], b_deg[half:], np.ones(n - half), rng, surveys=(survey,)
    )
    err = obs.mag_err[:, col]
    assert np.all(np.isfinite(err))
    assert np.median(err) == pytest.approx(model.error_floor[j], rel=0.1)


def test_noise_matches_reported_error():
    rng = np.random.default_rng(3)
    n = 50_000
    true_mag = _comfortable_mags(n) + 1.5  # 1 mag above the limit: noise well above floor
    l_deg, b_deg = _everywhere(n)
    obs = observe(true_mag, l_deg, b_deg, np.ones(n), rng)
    resid = obs.mag - true_mag
    for col in range(NB):
        ok = np.isfinite(resid[:, col])
        r, e = resid[ok, col], obs.mag_err[ok, col]
        assert ok.sum() > 0.5 * n
        pull_std = np.std(r / e)
        assert abs(pull_std - 1.0) < 0.05, BAND_IDS[col]
        assert abs(np.mean(r)) < 5 * np.std(r) / np.sqrt(r.size) + 1e-3


def test_gaia_photometric_errors_match_published_anchors():
    # Riello et al. 2021: G/BP/RP σ ≈ 1/12/6 mmag at G = 17 and 6/108/52 mmag at G = 20.
    gaia = SURVEY_MODELS["gaia"]
    anchors = {17.0: (0.001, 0.012, 0.006), 20.0: (0.006, 0.108, 0.052)}
    for mag, sigmas in anchors.items():
        err = gaia.magnitude_error(np.full((1, 3), mag))[0]
        np.testing.assert_allclose(err, sigmas, rtol=0.05)


def test_footprints():
    rng = np.random.default_rng(4)
    n = 200_000
    l_deg, b_deg = _random_sky(n, rng)
    ra, dec = galactic_to_icrs(l_deg, b_deg)
    obs = observe(_comfortable_mags(n), l_deg, b_deg, np.ones(n), rng)
    det = dict(zip(obs.surveys, obs.detected.T, strict=True))
    assert det["ps1"].any() and np.all(dec[det["ps1"]] > -30.0)
    assert det["skymapper"].any() and np.all(dec[det["skymapper"]] < 2.0)
    assert det["galex"].any() and np.all(np.abs(b_deg[det["galex"]]) > 10.0)
    for name in ("gaia", "tmass", "wise"):
        assert det[name].mean() > 0.99
    # Sky fractions: dec > -30 covers (1 + sin 30°)/2 = 3/4, dec < 2 covers (1 + sin 2°)/2,
    # |b| > 10 covers 1 - sin 10°; the SDSS footprint is roughly a quarter of the sky.
    tol = 5 * np.sqrt(0.25 / n)
    fp = {name: SURVEY_MODELS[name].in_footprint(ra, dec, l_deg, b_deg) for name in SURVEYS}
    assert fp["ps1"].mean() == pytest.approx(0.75, abs=tol)
    assert fp["skymapper"].mean() == pytest.approx((1 + np.sin(np.radians(2.0))) / 2, abs=tol)
    assert fp["galex"].mean() == pytest.approx(1 - np.sin(np.radians(10.0)), abs=tol)
    assert 0.2 < fp["sdss"].mean() < 0.4
    sdss = det["sdss"]
    assert np.all((b_deg[sdss] > 30) | (dec[sdss] > -10.0))


def test_galactic_to_icrs_matches_astropy():
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    rng = np.random.default_rng(5)
    l_deg, b_deg = _random_sky(2000, rng)
    l_deg[:3] = [0.0, 359.9999, 123.0]
    b_deg[:3] = [0.0, 89.99, -89.99]
    ra, dec = galactic_to_icrs(l_deg, b_deg)
    ref = SkyCoord(l=l_deg * u.deg, b=b_deg * u.deg, frame="galactic").icrs
    assert np.all((ra >= 0) & (ra < 360))
    np.testing.assert_allclose(dec, ref.dec.deg, rtol=0, atol=1e-8)
    dra = (ra - ref.ra.deg + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(dra * np.cos(np.radians(dec)), 0.0, atol=1e-8)


def test_parallax_error_law():
    table = {15.0: 0.03, 17.0: 0.07, 20.0: 0.5, 21.0: 1.3}
    got = gaia_parallax_error(np.array(list(table)))
    np.testing.assert_allclose(got, list(table.values()), rtol=0.1)
    assert np.all(np.diff(gaia_parallax_error(np.linspace(12, 23, 50))) >= 0)
    assert np.isnan(gaia_parallax_error(np.array([np.nan]))[0])


@pytest.mark.parametrize(("g_mag", "sigma"), [(15.0, 0.03), (17.0, 0.07), (20.0, 0.5)])
def test_observed_parallax_scatter(g_mag, sigma):
    rng = np.random.default_rng(int(g_mag))
    n = 40_000
    true_mag = _comfortable_mags(n)
    true_mag[:, BAND_IDS.index("gaia_g")] = g_mag
    true_plx = rng.uniform(0.5, 5.0, n)
    l_deg, b_deg = _everywhere(n)
    obs = observe(true_mag, l_deg, b_deg, true_plx, rng)
    ok = np.isfinite(obs.parallax)
    assert ok.mean() > 0.98
    resid = obs.parallax[ok] - true_plx[ok]
    assert np.std(resid) == pytest.approx(sigma, rel=max(0.1, 5 / np.sqrt(2 * ok.sum())))
    assert np.median(obs.parallax_error[ok]) == pytest.approx(sigma, rel=0.1)


def test_parallax_nan_without_gaia_g():
    rng = np.random.default_rng(6)
    n = 30_000
    true_mag = _comfortable_mags(n)
    g = BAND_IDS.index("gaia_g")
    true_mag[: n // 3, g] = np.nan  # no G from the forward model
    true_mag[n // 3 : 2 * n // 3, g] = 25.0  # too faint for Gaia
    l_deg, b_deg = _everywhere(n)
    obs = observe(true_mag, l_deg, b_deg, np.ones(n), rng)
    no_g = ~np.isfinite(obs.mag[:, g])
    assert no_g[: 2 * n // 3].all()
    np.testing.assert_array_equal(np.isnan(obs.parallax), no_g)
    np.testing.assert_array_equal(np.isnan(obs.parallax_error), no_g)
    # Without G there is no Gaia source, so BP and RP are missing too.
    assert np.all(np.isnan(obs.mag[: 2 * n // 3, g + 1 : g + 3]))
    obs = observe(true_mag, l_deg, b_deg, np.ones(n), rng, surveys=("tmass", "wise"))
    assert np.all(np.isnan(obs.parallax)) and np.all(np.isnan(obs.parallax_error))


def test_variability_inflates_scatter_and_errors():
    n = 50_000
    true_mag = _comfortable_mags(n) - 2.0  # floor-dominated
    l_deg, b_deg = _everywhere(n)
    amp = 0.2
    quiet = observe(true_mag, l_deg, b_deg, np.ones(n), np.random.default_rng(9))
    loud = observe(
        true_mag, l_deg, b_deg, np.ones(n), np.random.default_rng(9), variability=np.full(n, amp)
    )
    for col in range(NB):
        q_err = np.nanmedian(quiet.mag_err[:, col])
        l_err = np.nanmedian(loud.mag_err[:, col])
        assert l_err == pytest.approx(np.hypot(q_err, amp), rel=0.02)
        q_std = np.nanstd(quiet.mag[:, col] - true_mag[:, col])
        l_std = np.nanstd(loud.mag[:, col] - true_mag[:, col])
        assert l_std > q_std
        m = np.isfinite(loud.mag[:, col]).sum()
        assert l_std == pytest.approx(np.hypot(q_std, amp), rel=5 / np.sqrt(2 * m))
    # Detection and parallaxes do not depend on variability.
    np.testing.assert_array_equal(quiet.detected, loud.detected)
    np.testing.assert_array_equal(quiet.parallax, loud.parallax)


def test_selecting_gaia_only():
    rng = np.random.default_rng(10)
    n = 10_000
    l_deg, b_deg = _random_sky(n, rng)
    obs = observe(_comfortable_mags(n), l_deg, b_deg, np.ones(n), rng, surveys=("gaia",))
    gaia_cols = [BAND_IDS.index(b) for b in SURVEY_MODELS["gaia"].bands]
    other = np.setdiff1d(np.arange(NB), gaia_cols)
    assert np.all(np.isnan(obs.mag[:, other])) and np.all(np.isnan(obs.mag_err[:, other]))
    assert obs.detected.shape == (n, 1) and obs.surveys == ("gaia",)
    assert np.isfinite(obs.mag[:, gaia_cols]).mean() > 0.99
    assert np.isfinite(obs.parallax).mean() > 0.99


def test_custom_model_is_validated_and_pickles():
    import pickle

    model = SURVEY_MODELS["sdss"]
    assert pickle.loads(pickle.dumps(model)) == model
    assert isinstance(model, SurveyModel)
    assert model.band_index.tolist() == [BAND_IDS.index(b) for b in model.bands]


def test_unsaturated_stars_keep_bands_brighter_than_saturation():
    """``unsaturated`` lifts the bright limit for the chosen stars only (bright-star
    catalogs on a survey's system), leaving every other star and band as before."""
    n = 4000
    col = BAND_IDS.index("sdss_g")
    true_mag = _comfortable_mags(n)
    true_mag[:, col] = _band_param("sdss_g", "bright_limit") - 2.0  # saturated in SDSS
    l_deg, b_deg = _everywhere(n)
    chosen = np.arange(n) % 2 == 0
    plain = observe(true_mag, l_deg, b_deg, np.ones(n), np.random.default_rng(3))
    lifted = observe(
        true_mag, l_deg, b_deg, np.ones(n), np.random.default_rng(3), unsaturated=chosen
    )
    assert np.isnan(plain.mag[:, col]).all()
    assert np.isfinite(lifted.mag[chosen, col]).all()
    assert np.isnan(lifted.mag[~chosen, col]).all()
    # the reported error is the survey's floor at these magnitudes
    floor = _band_param("sdss_g", "error_floor")
    np.testing.assert_allclose(lifted.mag_err[chosen, col], floor, rtol=0.05)
    with pytest.raises(ValueError, match="unsaturated must have shape"):
        observe(true_mag, l_deg, b_deg, np.ones(n), np.random.default_rng(3),
                unsaturated=chosen[:10])  # fmt: skip


def test_galactic_to_icrs_constant_is_astropys_rotation():
    from astropy import units as u
    from astropy.coordinates import ICRS, Galactic

    basis = Galactic(l=[0.0, 90.0, 0.0] * u.deg, b=[0.0, 0.0, 90.0] * u.deg)
    xyz = np.array(basis.transform_to(ICRS()).cartesian.xyz.value)
    np.testing.assert_allclose(GALACTIC_TO_ICRS, xyz, rtol=0, atol=1e-15)
