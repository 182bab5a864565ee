"""Bad input: schema errors before compute, row flags (never crashes) after."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ysoscale.catalog.columns import (
    SchemaError,
    bands_in,
    canonical_columns,
    err_column,
    mag_column,
    validate_schema,
)
from ysoscale.catalog.quality import (
    MAG_MAX,
    MAG_MIN,
    MAX_MAG_ERROR,
    RowFlag,
    check_rows,
    describe_flags,
)
from ysoscale.physics.passbands import BAND_IDS

BANDS = ("gaia_g", "gaia_bp", "tmass_j", "wise_w1")

# --- schema ----------------------------------------------------------------------------------


def _dtypes(**extra: object) -> dict[str, object]:
    dtypes: dict[str, object] = {
        "source_id": np.dtype(np.int64),
        "ra": np.dtype(np.float64),
        "dec": np.dtype(np.float64),
        "parallax": np.dtype(np.float64),
        "parallax_error": np.dtype(np.float32),
        "gaia_g_mag": np.dtype(np.float32),
        "gaia_g_mag_err": np.dtype(np.float32),
        "tmass_ks_mag": np.dtype(np.float64),
        "tmass_ks_mag_err": np.dtype(np.float64),
    }
    dtypes.update(extra)
    return {k: v for k, v in dtypes.items() if v is not None}


def test_valid_schema_returns_bands_in_token_order() -> None:
    extra = {"pmra": np.dtype(np.float64), "name": np.dtype(object), "kic_g": "float64"}
    assert validate_schema(_dtypes(**extra)) == ("gaia_g", "tmass_ks")
    frame = pd.DataFrame({c: [1.0] for c in canonical_columns(["wise_w2", "galex_nuv"])})
    assert validate_schema(dict(frame.dtypes)) == ("galex_nuv", "wise_w2")
    # pandas nullable floats and dtype strings are numeric too
    assert validate_schema(_dtypes(gaia_g_mag="Float32", ra="float32")) == ("gaia_g", "tmass_ks")


@pytest.mark.parametrize("column", ["source_id", "ra", "dec"])
def test_missing_required_column(column: str) -> None:
    with pytest.raises(SchemaError, match=f"'{column}'") as info:
        validate_schema(_dtypes(**{column: None}))
    assert info.value.columns == (column,)


@pytest.mark.parametrize(
    ("column", "hint"),
    [
        ("gaia_gg_mag", "gaia_g"),
        ("fuv_mag", "galex_fuv"),
        ("tmass_k_mag_err", "tmass_ks"),
        ("GAIA_G_mag", "gaia_g"),
        ("w1_mag", "wise_w1"),
    ],
)
def test_unknown_band_column_suggests_nearest(column: str, hint: str) -> None:
    with pytest.raises(SchemaError) as info:
        validate_schema(_dtypes(**{column: np.dtype(np.float32)}))
    assert column in info.value.columns
    assert f"did you mean '{hint}'" in str(info.value) or f"'{hint}'" in str(info.value)


def test_unpaired_magnitude_and_error_columns() -> None:
    with pytest.raises(SchemaError, match="tmass_ks_mag_err") as info:
        validate_schema(_dtypes(tmass_ks_mag_err=None))
    assert info.value.columns == ("tmass_ks_mag_err",)
    with pytest.raises(SchemaError, match="'gaia_g_mag'"):
        validate_schema(_dtypes(gaia_g_mag=None))


@pytest.mark.parametrize("missing", ["parallax", "parallax_error"])
def test_parallax_needs_its_error(missing: str) -> None:
    with pytest.raises(SchemaError, match=missing) as info:
        validate_schema(_dtypes(**{missing: None}))
    assert info.value.columns == (missing,)


@pytest.mark.parametrize("column", ["gaia_g_mag", "gaia_g_mag_err", "ra", "dec", "parallax"])
@pytest.mark.parametrize("dtype", [np.dtype(object), pd.StringDtype(), np.dtype(bool), "str"])
def test_non_numeric_dtype(column: str, dtype: object) -> None:
    with pytest.raises(SchemaError, match=f"'{column}'") as info:
        validate_schema(_dtypes(**{column: dtype}))
    assert info.value.columns == (column,)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(SchemaError) as info:
        validate_schema(_dtypes(ra=None, gaia_g_mag=np.dtype(object), sdss_q_mag="float32"))
    assert set(info.value.columns) == {"ra", "gaia_g_mag", "sdss_q_mag"}


def test_schema_of_a_real_frame_with_strings() -> None:
    frame = pd.DataFrame(
        {"source_id": [1], "ra": ["12:00:00"], "dec": [0.0], "gaia_g_mag": [1.0]}
        | {"gaia_g_mag_err": [0.1]}
    )
    with pytest.raises(SchemaError, match="'ra'"):
        validate_schema(dict(frame.dtypes))


def test_column_helpers() -> None:
    assert mag_column("gaia_g") == "gaia_g_mag"
    assert err_column("wise_w4") == "wise_w4_mag_err"
    with pytest.raises(ValueError, match="gaia_g"):
        mag_column("gaia_gg")
    assert bands_in(reversed([mag_column(b) for b in BAND_IDS])) == BAND_IDS
    assert bands_in(["foo_mag", "ra", 3]) == ()


# --- row checks: each bit ----------------------------------------------------------------------


def _frame(n: int = 4) -> pd.DataFrame:
    data = {
        "source_id": np.arange(1, n + 1, dtype=np.int64),
        "ra": np.linspace(10, 20, n),
        "dec": np.linspace(-10, 10, n),
        "parallax": np.linspace(0.5, 5, n),
        "parallax_error": np.full(n, 0.05),
    }
    for k, band in enumerate(BANDS):
        data[mag_column(band)] = np.full(n, 12.0 + k)
        data[err_column(band)] = np.full(n, 0.02)
    return pd.DataFrame(data)


@pytest.mark.parametrize(
    ("column", "value", "bit"),
    [
        ("gaia_g_mag", np.inf, RowFlag.NONFINITE_VALUE),
        ("gaia_g_mag", np.nan, RowFlag.NONFINITE_VALUE),  # error without a magnitude
        ("gaia_g_mag_err", np.nan, RowFlag.BAD_MAG_ERROR),
        ("gaia_g_mag_err", 0.0, RowFlag.BAD_MAG_ERROR),
        ("gaia_g_mag_err", -0.1, RowFlag.BAD_MAG_ERROR),
        ("gaia_g_mag_err", 1e-60, RowFlag.BAD_MAG_ERROR),  # zero in float32
        ("gaia_g_mag_err", MAX_MAG_ERROR * 1.01, RowFlag.BAD_MAG_ERROR),
        ("gaia_g_mag", MAG_MAX + 1, RowFlag.MAG_OUT_OF_RANGE),
        ("gaia_g_mag", -999.0, RowFlag.MAG_OUT_OF_RANGE),
        ("parallax_error", -0.1, RowFlag.BAD_PARALLAX),
        ("parallax_error", np.nan, RowFlag.BAD_PARALLAX),
        ("parallax", np.inf, RowFlag.BAD_PARALLAX),
        ("parallax", 5000.0, RowFlag.BAD_PARALLAX),
        ("ra", 361.0, RowFlag.BAD_POSITION),
        ("dec", np.nan, RowFlag.BAD_POSITION),
        ("dec", -91.0, RowFlag.BAD_POSITION),
    ],
)
def test_each_bad_value_sets_its_bit_and_only_its_band(
    column: str, value: float, bit: RowFlag
) -> None:
    frame = _frame()
    frame.loc[1, column] = value
    check = check_rows(frame, BANDS)
    assert check.flags.tolist() == [0, int(bit), 0, 0]
    clean = check_rows(_frame(), BANDS)
    band_cols = column.startswith("gaia_g")
    np.testing.assert_array_equal(check.mag[:, 1:], clean.mag[:, 1:])  # other bands kept
    assert np.isnan(check.mag[1, 0]) == band_cols
    assert check.n_bands.tolist() == [4, 3 if band_cols else 4, 4, 4]
    assert np.isnan(check.parallax[1]) == (bit == RowFlag.BAD_PARALLAX)
    assert check.usable.all()


def test_non_detections_are_not_flags() -> None:
    frame = _frame()
    frame.loc[0, ["gaia_g_mag", "gaia_g_mag_err"]] = np.nan
    frame.loc[2, ["parallax", "parallax_error"]] = np.nan
    frame.loc[3, "parallax"] = -2.0  # a negative parallax is a measurement
    check = check_rows(frame.drop(columns=["wise_w1_mag", "wise_w1_mag_err"]), BANDS)
    assert check.flags.tolist() == [0, 0, 0, 0]
    assert check.n_bands.tolist() == [2, 3, 3, 3]
    assert np.isnan(check.mag[:, 3]).all()  # a band the frame lacks is all NaN
    assert check.parallax[3] == -2.0


def test_no_usable_band_and_ids() -> None:
    frame = _frame()
    frame[[mag_column(b) for b in BANDS]] = np.nan
    frame[[err_column(b) for b in BANDS]] = np.nan
    frame.loc[0, "source_id"] = 3
    frame["source_id"] = frame["source_id"].astype("Int64")
    frame.loc[1, "source_id"] = pd.NA
    check = check_rows(frame, BANDS)
    none, dup, missing = (
        RowFlag.NO_USABLE_BAND,
        RowFlag.DUPLICATE_SOURCE_ID,
        RowFlag.MISSING_SOURCE_ID,
    )
    assert check.flags.tolist() == [none | dup, none | missing, none | dup, none]
    assert not check.usable.any()
    assert describe_flags(int(none | dup)) == [
        "DUPLICATE_SOURCE_ID: the source_id occurs more than once",
        "NO_USABLE_BAND: no band is left to infer from",
    ]
    assert describe_flags(0) == []
    assert describe_flags(1 << 20) == ["unknown bit 20"]


def test_strings_inside_rows_are_flagged_not_raised() -> None:
    frame = _frame()
    frame["gaia_g_mag"] = frame["gaia_g_mag"].astype(object)
    frame.loc[2, "gaia_g_mag"] = "saturated"
    frame["parallax"] = frame["parallax"].astype(object)
    frame.loc[3, "parallax"] = "n/a"
    check = check_rows(frame, BANDS)
    assert check.flags.tolist() == [0, 0, RowFlag.NONFINITE_VALUE, RowFlag.BAD_PARALLAX]
    assert check.mag[0, 0] == 12.0


def test_dtypes_and_shapes() -> None:
    check = check_rows(_frame(3), BANDS)
    assert check.mag.shape == check.mag_err.shape == (3, len(BANDS))
    assert check.mag.dtype == check.mag_err.dtype == np.float32
    assert check.parallax.dtype == check.parallax_error.dtype == np.float32
    assert check.flags.dtype == np.uint32 and check.n_bands.dtype == np.int16
    empty = check_rows(_frame(0), BANDS)
    assert empty.mag.shape == (0, len(BANDS)) and empty.flags.shape == (0,)


# --- fuzz --------------------------------------------------------------------------------------

MAG_CORRUPTIONS = {
    "inf_mag": (RowFlag.NONFINITE_VALUE, lambda m, e: (np.inf, e)),
    "neg_inf_mag": (RowFlag.NONFINITE_VALUE, lambda m, e: (-np.inf, e)),
    "nan_mag_with_error": (RowFlag.NONFINITE_VALUE, lambda m, e: (np.nan, e)),
    "nan_err": (RowFlag.BAD_MAG_ERROR, lambda m, e: (m, np.nan)),
    "inf_err": (RowFlag.BAD_MAG_ERROR, lambda m, e: (m, np.inf)),
    "zero_err": (RowFlag.BAD_MAG_ERROR, lambda m, e: (m, 0.0)),
    "negative_err": (RowFlag.BAD_MAG_ERROR, lambda m, e: (m, -e)),
    "huge_err": (RowFlag.BAD_MAG_ERROR, lambda m, e: (m, 1e6)),
    "sentinel_99": (RowFlag.MAG_OUT_OF_RANGE, lambda m, e: (99.0, e)),
    "sentinel_minus_999": (RowFlag.MAG_OUT_OF_RANGE, lambda m, e: (-999.0, e)),
    "absurd_mag": (RowFlag.MAG_OUT_OF_RANGE, lambda m, e: (1e30, e)),
}
ROW_CORRUPTIONS = {
    "negative_parallax_error": RowFlag.BAD_PARALLAX,
    "zero_parallax_error": RowFlag.BAD_PARALLAX,
    "inf_parallax": RowFlag.BAD_PARALLAX,
    "nan_parallax_with_error": RowFlag.BAD_PARALLAX,
    "bad_ra": RowFlag.BAD_POSITION,
    "nan_dec": RowFlag.BAD_POSITION,
    "duplicate_id": RowFlag.DUPLICATE_SOURCE_ID,
}
FUZZ_BANDS = ("sdss_g", "gaia_g", "gaia_rp", "tmass_j", "tmass_ks", "wise_w2")


def _clean_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    nb = len(FUZZ_BANDS)
    mag = rng.uniform(MAG_MIN + 1, MAG_MAX - 1, (n, nb))
    err = rng.uniform(1e-3, MAX_MAG_ERROR * 0.99, (n, nb))
    observed = rng.random((n, nb)) < 0.7
    observed[np.arange(n), rng.integers(0, nb, n)] = True  # every clean row has a band
    mag[~observed] = np.nan
    err[~observed] = np.nan
    plx = rng.uniform(-2, 50, n)
    plx_err = rng.uniform(0.01, 3, n)
    no_plx = rng.random(n) < 0.3
    plx[no_plx] = plx_err[no_plx] = np.nan
    data = {
        "source_id": np.arange(1, n + 1, dtype=np.int64) * 10,
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-90, 90, n),
        "parallax": plx,
        "parallax_error": plx_err,
        "other": rng.normal(size=n),
    }
    for k, band in enumerate(FUZZ_BANDS):
        data[mag_column(band)] = mag[:, k].astype(np.float32)
        data[err_column(band)] = err[:, k].astype(np.float32)
    return data


def _corrupt_row(
    data: dict[str, np.ndarray], row: int, rng: np.random.Generator
) -> tuple[int, list[int], bool, bool]:
    """Corrupt 1-3 values of ``row``: (expected bits, bands hit, parallax hit, duplicate)."""
    bits, bands, plx_hit, duplicate = 0, [], False, False
    observed = [k for k, b in enumerate(FUZZ_BANDS) if np.isfinite(data[mag_column(b)][row])]
    observed = list(rng.permutation(observed))
    for _ in range(rng.integers(1, 4)):
        if rng.random() < 0.6 and observed:
            bit, corrupt = MAG_CORRUPTIONS[rng.choice(sorted(MAG_CORRUPTIONS))]
            k = int(observed.pop())
            m, e = data[mag_column(FUZZ_BANDS[k])], data[err_column(FUZZ_BANDS[k])]
            m[row], e[row] = corrupt(m[row], e[row])
            bits |= bit
            bands.append(k)
            continue
        name = rng.choice(sorted(ROW_CORRUPTIONS))
        if name == "duplicate_id":
            data["source_id"][row] = 7  # clean ids are multiples of 10
            duplicate = True
            continue
        bits |= ROW_CORRUPTIONS[name]
        if name == "bad_ra":
            data["ra"][row] = rng.choice([360.5, -1.0, np.inf])
        elif name == "nan_dec":
            data["dec"][row] = np.nan
        else:
            plx_hit = True
            data["parallax"][row], data["parallax_error"][row] = {
                "nan_parallax_with_error": (np.nan, 0.1),
                "inf_parallax": (np.inf, 0.1),
                "negative_parallax_error": (1.0, -0.5),
                "zero_parallax_error": (1.0, 0.0),
            }[name]
    return bits, bands, plx_hit, duplicate


@settings(max_examples=200, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), fraction=st.floats(0, 1))
def test_fuzz_corrupted_rows_are_flagged_and_clean_rows_unchanged(
    seed: int, n: int, fraction: float
) -> None:
    rng = np.random.default_rng(seed)
    data = _clean_columns(rng, n)
    clean_check = check_rows(pd.DataFrame(data), FUZZ_BANDS)
    assert (clean_check.flags == 0).all()
    clean_mag = np.column_stack([data[mag_column(b)] for b in FUZZ_BANDS])
    clean_err = np.column_stack([data[err_column(b)] for b in FUZZ_BANDS])
    np.testing.assert_array_equal(clean_check.mag, clean_mag)  # (copies: data is mutated)
    np.testing.assert_array_equal(clean_check.mag_err, clean_err)

    expected = np.zeros(n, dtype=np.uint32)
    corrupted_band = np.zeros((n, len(FUZZ_BANDS)), dtype=bool)
    corrupted_plx = np.zeros(n, dtype=bool)
    duplicates = []
    for row in np.flatnonzero(rng.random(n) < fraction):
        bits, bands, plx_hit, duplicate = _corrupt_row(data, row, rng)
        expected[row] |= np.uint32(bits)
        corrupted_band[row, bands] = True
        corrupted_plx[row] = plx_hit
        if duplicate:
            duplicates.append(row)
    if len(duplicates) > 1:
        expected[duplicates] |= np.uint32(RowFlag.DUPLICATE_SOURCE_ID)
    clean_bands = clean_check.n_bands - corrupted_band.sum(axis=1)
    expected[clean_bands == 0] |= np.uint32(RowFlag.NO_USABLE_BAND)
    frame = pd.DataFrame(data)
    before = frame.copy()

    check = check_rows(frame, FUZZ_BANDS)

    pd.testing.assert_frame_equal(frame, before)
    assert len(check.flags) == len(check.mag) == len(check.parallax) == n
    np.testing.assert_array_equal(check.flags, expected)
    np.testing.assert_array_equal(check.n_bands, clean_bands)
    # every value that was not corrupted is passed through bit for bit, the rest is NaN
    keep, hit = ~corrupted_band, corrupted_band
    np.testing.assert_array_equal(check.mag[keep], clean_check.mag[keep])
    np.testing.assert_array_equal(check.mag_err[keep], clean_check.mag_err[keep])
    assert np.isnan(check.mag[hit]).all() and np.isnan(check.mag_err[hit]).all()
    keep_plx = ~corrupted_plx
    np.testing.assert_array_equal(check.parallax[keep_plx], clean_check.parallax[keep_plx])
    np.testing.assert_array_equal(
        check.parallax_error[keep_plx], clean_check.parallax_error[keep_plx]
    )
    assert np.isnan(check.parallax[corrupted_plx]).all()
    assert (check.usable == (clean_bands > 0)).all()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    values=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 12), st.just(2 * len(BANDS) + 4)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    ids=st.lists(st.integers(0, 3), min_size=12, max_size=12),
)
def test_fuzz_arbitrary_floats_never_raise(values: np.ndarray, ids: list[int]) -> None:
    n = len(values)
    columns = ["ra", "dec", "parallax", "parallax_error"]
    columns += [c for b in BANDS for c in (mag_column(b), err_column(b))]
    frame = pd.DataFrame(values, columns=columns)
    frame.insert(0, "source_id", ids[:n])

    check = check_rows(frame, BANDS)

    assert check.mag.shape == (n, len(BANDS)) and check.flags.shape == (n,)
    finite = np.isfinite(check.mag)
    np.testing.assert_array_equal(finite, np.isfinite(check.mag_err))
    np.testing.assert_array_equal(check.n_bands, finite.sum(axis=1))
    with np.errstate(over="ignore"):
        raw_mag = values[:, 4::2].astype(np.float32)
    np.testing.assert_array_equal(check.mag[finite], raw_mag[finite])
    assert np.all((check.mag[finite] >= MAG_MIN) & (check.mag[finite] <= MAG_MAX))
    assert np.all((check.mag_err[finite] > 0) & (check.mag_err[finite] <= MAX_MAG_ERROR))
    assert np.all((check.n_bands == 0) == ((check.flags & RowFlag.NO_USABLE_BAND) > 0))
    # a row loses a band only with a reason
    observed = ~(np.isnan(values[:, 4::2]) & np.isnan(values[:, 5::2]))
    lost = (observed & ~finite).any(axis=1)
    reasons = RowFlag.NONFINITE_VALUE | RowFlag.BAD_MAG_ERROR | RowFlag.MAG_OUT_OF_RANGE
    np.testing.assert_array_equal(lost, (check.flags & reasons) > 0)
