"""Survey adapters: round trips on hand-made rows in each survey's native schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ysoscale.catalog.adapters import (
    ADAPTERS,
    GAIA_ZERO_POINT_ERRORS,
    MAG_PER_FLUX_RATIO,
    BandAction,
    SurveyFlag,
    band_bit,
    describe_quality,
    to_canonical,
)
from ysoscale.catalog.columns import SchemaError, err_column, mag_column, validate_schema
from ysoscale.simulate.surveys import SURVEYS

N = 12


def _truth(survey: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    bands = ADAPTERS[survey].bands
    return {
        "mag": rng.uniform(8.0, 20.0, (N, len(bands))),
        "err": rng.uniform(0.005, 0.3, (N, len(bands))),
        "ra": rng.uniform(0.0, 360.0, N),
        "dec": rng.uniform(-90.0, 90.0, N),
        "id": (rng.integers(1, 2**40, N) // N) * N + np.arange(N),  # unique
    }


def _native(survey: str, t: dict[str, np.ndarray]) -> pd.DataFrame:
    """Native-schema frame whose canonical form is ``t`` (Gaia: see the error test)."""
    a = ADAPTERS[survey]
    frame = pd.DataFrame({a.id_column: t["id"], a.ra_column: t["ra"], a.dec_column: t["dec"]})
    for k, (mag, err) in enumerate(zip(a.mag_columns, a.err_columns, strict=True)):
        frame[mag] = t["mag"][:, k]
        frame[err] = MAG_PER_FLUX_RATIO / t["err"][:, k] if survey == "gaia" else t["err"][:, k]
    if survey == "gaia":
        frame["parallax"] = np.linspace(-0.5, 10.0, N)
        frame["parallax_error"] = np.linspace(0.02, 1.0, N)
    if survey == "tmass":
        frame["ph_qual"], frame["cc_flg"] = "AAA", "000"
    if survey == "wise":
        frame["ph_qual"], frame["cc_flags"] = "ABCA", "0000"
    # a shuffled, non-default index: the output must keep it
    frame.index = pd.Index(np.arange(N)[::-1] * 7 + 3, name="row")
    return frame


def test_adapters_cover_every_simulated_survey() -> None:
    assert set(ADAPTERS) == set(SURVEYS)
    for name, adapter in ADAPTERS.items():
        assert adapter.name == name


@pytest.mark.parametrize("survey", sorted(ADAPTERS))
def test_round_trip_clean_rows(survey: str, rng: np.random.Generator) -> None:
    t = _truth(survey, rng)
    native = _native(survey, t)
    before = native.copy()
    options = {"ab_offsets": False} if survey == "sdss" else {}
    out = to_canonical(native, survey, **options)

    pd.testing.assert_frame_equal(native, before)  # input untouched
    assert len(out) == N
    assert out.index.equals(native.index)
    np.testing.assert_array_equal(out["source_id"], t["id"])
    np.testing.assert_array_equal(out[f"{survey}_id"], t["id"])
    np.testing.assert_array_equal(out["ra"], t["ra"])
    np.testing.assert_array_equal(out["dec"], t["dec"])
    bands = ADAPTERS[survey].bands
    for k, band in enumerate(bands):
        assert out[mag_column(band)].dtype == np.float32
        np.testing.assert_array_equal(out[mag_column(band)], t["mag"][:, k].astype(np.float32))
        expected = t["err"][:, k]
        if survey == "gaia":
            expected = np.hypot(expected, GAIA_ZERO_POINT_ERRORS[band])
        np.testing.assert_allclose(out[err_column(band)], expected, rtol=1e-6)
    assert out[f"{survey}_quality"].dtype == np.uint32
    assert (out[f"{survey}_quality"] == 0).all()
    assert validate_schema(dict(out.dtypes)) == bands


def test_gaia_errors_follow_riello_zero_points() -> None:
    native = _native("gaia", _truth("gaia", np.random.default_rng(1)))
    native["phot_g_mean_flux_over_error"] = 1000.0
    out = to_canonical(native, "gaia")
    expected = np.sqrt((1.0857362 / 1000.0) ** 2 + 0.0027553202**2)
    np.testing.assert_allclose(out["gaia_g_mag_err"], expected, rtol=1e-6)
    np.testing.assert_array_equal(out["parallax"], native["parallax"])
    np.testing.assert_array_equal(out["parallax_error"], native["parallax_error"])


def test_gaia_missing_band_and_bad_flux_over_error() -> None:
    native = _native("gaia", _truth("gaia", np.random.default_rng(2)))
    native.loc[native.index[0], ["phot_bp_mean_mag", "phot_bp_mean_flux_over_error"]] = np.nan
    native.loc[native.index[1], "phot_rp_mean_flux_over_error"] = 0.0
    out = to_canonical(native, "gaia")
    q = out["gaia_quality"].to_numpy()
    assert np.isnan(out["gaia_bp_mag"].iloc[0]) and q[0] == 0  # not observed: no bit
    assert np.isnan(out["gaia_rp_mag"].iloc[1])
    assert q[1] == band_bit(2, BandAction.REJECTED)
    assert describe_quality("gaia", q[1]) == ["gaia_rp: REJECTED"]


def test_gaia_parallax_zero_point() -> None:
    zpt = pytest.importorskip("zero_point.zpt")
    zpt.load_tables()
    rng = np.random.default_rng(3)
    native = _native("gaia", _truth("gaia", rng))
    native["phot_g_mean_mag"] = np.linspace(10.0, 19.0, N)
    native["nu_eff_used_in_astrometry"] = rng.uniform(1.3, 1.7, N)
    native["pseudocolour"] = rng.uniform(1.3, 1.7, N)
    native["ecl_lat"] = rng.uniform(-80, 80, N)
    native["astrometric_params_solved"] = np.where(np.arange(N) % 2, 31, 95).astype(np.int16)
    native.loc[native.index[0], "astrometric_params_solved"] = 3  # two-parameter solution
    native.loc[native.index[0], ["parallax", "parallax_error"]] = np.nan
    native.loc[native.index[1], "phot_g_mean_mag"] = 21.5  # outside the calibration
    out = to_canonical(native, "gaia", parallax_zero_point=True)

    q = out["gaia_quality"].to_numpy()
    assert q[0] & SurveyFlag.PARALLAX_ZERO_POINT_APPLIED == 0
    assert q[0] & SurveyFlag.PARALLAX_ZERO_POINT_UNAVAILABLE == 0
    assert q[1] & SurveyFlag.PARALLAX_ZERO_POINT_UNAVAILABLE
    assert out["parallax"].iloc[1] == native["parallax"].iloc[1]
    rest = slice(2, None)
    expected = zpt.get_zpt(
        native["phot_g_mean_mag"].to_numpy()[rest],
        native["nu_eff_used_in_astrometry"].to_numpy()[rest],
        native["pseudocolour"].to_numpy()[rest],
        native["ecl_lat"].to_numpy()[rest],
        native["astrometric_params_solved"].to_numpy()[rest],
    )
    assert np.all(q[rest] & SurveyFlag.PARALLAX_ZERO_POINT_APPLIED)
    np.testing.assert_allclose(out["gaia_parallax_zero_point"].to_numpy()[rest], expected)
    np.testing.assert_allclose(
        out["parallax"].to_numpy()[rest], native["parallax"].to_numpy()[rest] - expected
    )
    assert np.all(np.abs(expected) < 0.2)  # tens of µas, not mas


def test_gaia_zero_point_needs_its_columns() -> None:
    native = _native("gaia", _truth("gaia", np.random.default_rng(4)))
    with pytest.raises(SchemaError, match="pseudocolour") as info:
        to_canonical(native, "gaia", parallax_zero_point=True)
    assert "gaia" in str(info.value)
    assert "nu_eff_used_in_astrometry" in info.value.columns


def _tmass_rows(ph_qual: list[str], cc_flg: list[str]) -> pd.DataFrame:
    n = len(ph_qual)
    return pd.DataFrame(
        {
            "designation": [f"src{i}" for i in range(n)],
            "ra": np.full(n, 246.5),
            "dec": np.full(n, -24.4),
            "j_m": np.full(n, 12.0),
            "j_msigcom": np.full(n, 0.03),
            "h_m": np.full(n, 11.0),
            "h_msigcom": np.full(n, 0.03),
            "k_m": np.full(n, 10.5),
            "k_msigcom": np.full(n, 0.03),
            "ph_qual": ph_qual,
            "cc_flg": cc_flg,
        }
    )


def test_tmass_quality_letters() -> None:
    native = _tmass_rows(["ABC", "DEA", "FXU", "AAA", "QAA"], ["000", "000", "000", "c0d", "000"])
    native.loc[2, "k_msigcom"] = np.nan  # U: the magnitude is an upper limit, no error
    out = to_canonical(native, "tmass")
    j, h, ks = (out[f"tmass_{b}_mag"].to_numpy() for b in ("j", "h", "ks"))
    je, he, kse = (out[f"tmass_{b}_mag_err"].to_numpy() for b in ("j", "h", "ks"))
    q = out["tmass_quality"].to_numpy()

    assert q[0] == 0 and np.all(np.isfinite([j[0], h[0], ks[0]]))
    np.testing.assert_allclose(
        [je[1], he[1], kse[1]], [np.hypot(0.03, 0.1), np.hypot(0.03, 0.2), 0.03], rtol=1e-6
    )
    assert q[1] == band_bit(0, BandAction.INFLATED) | band_bit(1, BandAction.INFLATED)
    assert np.all(np.isnan([j[2], h[2], ks[2], je[2], he[2], kse[2]]))
    assert describe_quality("tmass", q[2]) == [
        "tmass_j: REJECTED",
        "tmass_h: REJECTED",
        "tmass_ks: UPPER_LIMIT",
    ]
    np.testing.assert_allclose(
        [je[3], he[3], kse[3]], [np.hypot(0.03, 0.1), 0.03, np.hypot(0.03, 0.1)], rtol=1e-6
    )
    assert j[3] == 12.0  # contamination inflates the error, never moves the magnitude
    assert q[4] == SurveyFlag.MALFORMED_QUALITY and j[4] == 12.0 and je[4] == np.float32(0.03)


def test_tmass_flag_strings_as_read_from_csv() -> None:
    # cc_flg "000" arrives as the integer 0 from a CSV reader; absent strings as NaN
    native = _tmass_rows(["AAA", "AAA"], ["000", "000"])
    native["cc_flg"] = pd.Series([0, "0c0"], dtype=object)
    out = to_canonical(native, "tmass")
    assert out["tmass_quality"].tolist() == [0, band_bit(1, BandAction.INFLATED)]
    native["cc_flg"] = [0, 10]  # an all-digit column: "000" and "010" ('1' is no cc letter)
    out = to_canonical(native, "tmass")
    assert out["tmass_quality"].tolist() == [0, SurveyFlag.MALFORMED_QUALITY]

    unmatched = _tmass_rows(["AAA"], ["000"])
    unmatched.loc[0, ["j_m", "j_msigcom", "h_m", "h_msigcom", "k_m", "k_msigcom"]] = np.nan
    unmatched["ph_qual"], unmatched["cc_flg"] = None, None
    out = to_canonical(unmatched, "tmass")
    assert out["tmass_quality"].tolist() == [0]  # nothing measured, nothing to report


def test_tmass_missing_error_is_rejected_not_kept() -> None:
    native = _tmass_rows(["AAA"], ["000"])
    native.loc[0, "h_msigcom"] = np.nan
    out = to_canonical(native, "tmass")
    assert np.isnan(out["tmass_h_mag"].iloc[0])
    assert out["tmass_quality"].iloc[0] == band_bit(1, BandAction.REJECTED)


def test_wise_quality_letters_and_upper_limits() -> None:
    native = pd.DataFrame(
        {
            "designation": ["a", "b", "c"],
            "ra": [10.0, 11.0, 12.0],
            "dec": [-5.0, -6.0, -7.0],
            **{f"w{i}mpro": [12.0, 12.0, 12.0] for i in range(1, 5)},
            **{f"w{i}sigmpro": [0.05, 0.05, 0.05] for i in range(1, 5)},
            "ph_qual": ["AAUX", "ZAAA", "AAAA"],
            "cc_flags": ["0000", "0000", "Dd0h"],
        }
    )
    native.loc[0, "w3sigmpro"] = np.nan
    native.loc[1, "w4sigmpro"] = np.nan  # a NaN sigmpro is an upper limit whatever the letter
    out = to_canonical(native, "wise")
    q = out["wise_quality"].to_numpy()
    assert describe_quality("wise", q[0]) == ["wise_w3: UPPER_LIMIT", "wise_w4: REJECTED"]
    assert describe_quality("wise", q[1]) == ["wise_w1: REJECTED", "wise_w4: UPPER_LIMIT"]
    assert describe_quality("wise", q[2]) == [
        "wise_w1: REJECTED",
        "wise_w2: INFLATED",
        "wise_w4: INFLATED",
    ]
    assert np.isnan(out["wise_w1_mag"].iloc[2]) and out["wise_w3_mag"].iloc[2] == 12.0
    np.testing.assert_allclose(out["wise_w2_mag_err"].iloc[2], np.hypot(0.05, 0.1), rtol=1e-6)


@pytest.mark.parametrize(
    ("survey", "sentinel"), [("ps1", -999.0), ("sdss", -9999.0), ("galex", -999.0)]
)
def test_sentinels_become_flagged_non_detections(survey: str, sentinel: float) -> None:
    native = _native(survey, _truth(survey, np.random.default_rng(5)))
    a = ADAPTERS[survey]
    native.loc[native.index[0], [a.mag_columns[0], a.err_columns[0]]] = sentinel
    native.loc[native.index[1], a.err_columns[-1]] = sentinel  # magnitude without error
    out = to_canonical(native, survey)
    q = out[f"{survey}_quality"].to_numpy()
    first, last = a.bands[0], a.bands[-1]
    assert np.isnan(out[mag_column(first)].iloc[0]) and np.isnan(out[err_column(first)].iloc[0])
    assert q[0] == band_bit(0, BandAction.SENTINEL)
    assert np.isnan(out[mag_column(last)].iloc[1])
    assert q[1] == band_bit(len(a.bands) - 1, BandAction.REJECTED)
    assert np.all(q[2:] == 0)
    assert np.all(np.isfinite(out[mag_column(last)].iloc[2:]))


def test_sdss_ab_offsets() -> None:
    t = _truth("sdss", np.random.default_rng(6))
    out = to_canonical(_native("sdss", t), "sdss")
    np.testing.assert_allclose(out["sdss_u_mag"], t["mag"][:, 0] - 0.04, rtol=1e-6)
    np.testing.assert_allclose(out["sdss_g_mag"], t["mag"][:, 1], rtol=1e-6)
    np.testing.assert_allclose(out["sdss_z_mag"], t["mag"][:, 4] + 0.02, rtol=1e-6)


def test_native_names_match_case_insensitively() -> None:
    t = _truth("galex", np.random.default_rng(7))
    native = _native("galex", t).rename(columns=str.upper)  # GUVcat spells them in capitals
    out = to_canonical(native, "galex")
    np.testing.assert_array_equal(out["galex_nuv_mag"], t["mag"][:, 1].astype(np.float32))


@pytest.mark.parametrize("survey", sorted(ADAPTERS))
def test_missing_native_column_names_column_and_survey(survey: str) -> None:
    native = _native(survey, _truth(survey, np.random.default_rng(8)))
    a = ADAPTERS[survey]
    for column in (a.ra_column, a.mag_columns[-1], a.err_columns[0], a.id_column):
        with pytest.raises(SchemaError) as info:
            to_canonical(native.drop(columns=column), survey)
        assert column in str(info.value) and survey in str(info.value)
        assert info.value.columns == (column,)


def test_missing_quality_columns_name_them() -> None:
    native = _native("tmass", _truth("tmass", np.random.default_rng(9)))
    with pytest.raises(SchemaError, match="cc_flg"):
        to_canonical(native.drop(columns="cc_flg"), "tmass")
    native = _native("gaia", _truth("gaia", np.random.default_rng(9)))
    with pytest.raises(SchemaError, match="parallax_error"):
        to_canonical(native.drop(columns="parallax_error"), "gaia")


def test_text_in_a_magnitude_column_is_a_schema_error() -> None:
    native = _native("ps1", _truth("ps1", np.random.default_rng(10)))
    native["rMeanPSFMag"] = native["rMeanPSFMag"].astype(str)
    native.loc[native.index[0], "rMeanPSFMag"] = "saturated"
    with pytest.raises(SchemaError, match="rMeanPSFMag"):
        to_canonical(native, "ps1")


def test_options_are_checked() -> None:
    native = _native("ps1", _truth("ps1", np.random.default_rng(11)))
    with pytest.raises(TypeError, match="parallax_zero_point"):
        to_canonical(native, "ps1", parallax_zero_point=True)
    with pytest.raises(ValueError, match="unknown survey"):
        to_canonical(native, "panstarrs")


def test_id_column_and_keep_options() -> None:
    t = _truth("tmass", np.random.default_rng(12))
    native = _native("tmass", t)
    native["pts_key"] = np.arange(N, dtype=np.int64) + 100
    native["j_snr"] = np.linspace(5, 50, N)
    out = to_canonical(native, "tmass", id_column="pts_key", keep=["j_snr"])
    np.testing.assert_array_equal(out["source_id"], native["pts_key"])
    np.testing.assert_array_equal(out["j_snr"], native["j_snr"])
    assert validate_schema(dict(out.dtypes)) == ("tmass_j", "tmass_h", "tmass_ks")


def test_string_ids_and_empty_input() -> None:
    native = _tmass_rows(["AAA", "AAB"], ["000", "000"])
    out = to_canonical(native, "tmass")
    assert out["source_id"].tolist() == ["src0", "src1"]
    assert out["tmass_id"].tolist() == ["src0", "src1"]
    empty = to_canonical(native.iloc[:0], "tmass")
    assert len(empty) == 0 and "tmass_quality" in empty.columns
