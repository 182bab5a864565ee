"""Bad input: schema problems stop the run before any compute, naming the column; bad
rows are flagged, get NaN where nothing is usable, and never change the clean rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.infer import BANDS, synthetic_catalog, write_hats
from ysoscale.catalog.columns import SchemaError
from ysoscale.catalog.quality import RowFlag, check_rows
from ysoscale.cli import main
from ysoscale.infer import infer, open_cube
from ysoscale.infer.kernel import infer_arrays
from ysoscale.nn import PosteriorEstimator

pytestmark = pytest.mark.usefixtures("one_thread")


def _missing_ra(frame):
    return frame.drop(columns="ra")


def _unknown_band(frame):
    return frame.rename(columns={"gaia_g_mag": "gaia_x_mag", "gaia_g_mag_err": "gaia_x_mag_err"})


def _strings(frame):
    frame = frame.copy()
    frame["tmass_j_mag"] = frame["tmass_j_mag"].astype(str).where(frame.index != 3, "bright")
    return frame


def _string_ids(frame):
    return frame.assign(source_id="Gaia DR3 " + frame["source_id"].astype(str))


def _clash(frame):
    return frame.assign(flags=1)


SCHEMA_CASES = {
    "ra": _missing_ra,
    "gaia_x_mag": _unknown_band,
    "tmass_j_mag": _strings,
    "source_id": _string_ids,
    "flags": _clash,
}


@pytest.mark.parametrize("column", SCHEMA_CASES)
def test_schema_error_names_the_column_before_any_compute(tmp_path, model_dir, column):
    frame = SCHEMA_CASES[column](synthetic_catalog(20))
    frame.to_csv(tmp_path / "catalog.csv", index=False)
    with pytest.raises(SchemaError, match=column) as error:
        infer(tmp_path / "catalog.csv", tmp_path / "out", model=model_dir, workers=0)
    assert column in error.value.columns
    assert not (tmp_path / "out").exists()


def test_schema_error_of_a_hats_input_and_on_the_command_line(tmp_path, model_dir, capsys):
    write_hats(_strings(synthetic_catalog(50)), tmp_path / "catalog")
    code = main(["infer", str(tmp_path / "catalog"), "--out", str(tmp_path / "out"),
                 "--model", str(model_dir), "--workers", "0"])  # fmt: skip
    assert code == 2
    assert "tmass_j_mag" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


BAD_ROWS = {
    # name: (changes, flag bits expected, inferred from the remaining bands?)
    "nan_mag_with_error": ({"gaia_bp_mag": np.nan}, RowFlag.NONFINITE_VALUE, True),
    "inf_mag": ({"gaia_rp_mag": np.inf}, RowFlag.NONFINITE_VALUE, True),
    "negative_error": ({"gaia_g_mag_err": -0.1}, RowFlag.BAD_MAG_ERROR, True),
    "zero_error": ({"tmass_j_mag_err": 0.0}, RowFlag.BAD_MAG_ERROR, True),
    "absurd_error": ({"tmass_h_mag_err": 1e6}, RowFlag.BAD_MAG_ERROR, True),
    "sentinel_mag": ({"tmass_ks_mag": 99.0}, RowFlag.MAG_OUT_OF_RANGE, True),
    "negative_parallax_error": ({"parallax_error": -0.3}, RowFlag.BAD_PARALLAX, True),
    "bad_position": ({"dec": 100.0}, RowFlag.BAD_POSITION, True),
    "no_band": ({f"{b}_mag": np.nan for b in BANDS}, RowFlag.NO_USABLE_BAND, False),
    "only_bad_bands": (
        {**{f"{b}_mag": np.nan for b in BANDS[1:]}, "gaia_g_mag": -50.0},
        RowFlag.MAG_OUT_OF_RANGE | RowFlag.NO_USABLE_BAND,
        False,
    ),
}


def test_bad_rows_are_flagged_and_leave_clean_rows_unchanged(tmp_path, model_dir):
    clean = synthetic_catalog(240, seed=5)
    bad = synthetic_catalog(len(BAD_ROWS) + 2, seed=6)
    for i, (changes, _, _) in enumerate(BAD_ROWS.values()):
        for column, value in changes.items():
            bad.loc[i, column] = value
    bad.loc[len(BAD_ROWS) :, "source_id"] = 12345  # a duplicated source_id
    rows = pd.concat([clean, bad]).sample(frac=1.0, random_state=0).reset_index(drop=True)
    options = dict(model=model_dir, n_samples=8, workers=0, progress=False, partition_rows=100)
    clean.to_parquet(tmp_path / "clean.parquet")
    rows.to_parquet(tmp_path / "rows.parquet")
    reference = open_cube(infer(tmp_path / "clean.parquet", tmp_path / "a", **options).cube)
    cube = open_cube(infer(tmp_path / "rows.parquet", tmp_path / "b", **options).cube)

    assert cube.sizes["star"] == len(rows)
    position = {sid: i for i, sid in enumerate(cube.source_id.values)}
    flags, samples = cube.flags.values, cube.samples.values
    for (name, (_, bits, inferred)), sid in zip(BAD_ROWS.items(), bad["source_id"], strict=False):
        i = position[sid]
        assert flags[i] & bits == bits, name
        assert np.isfinite(samples[i, :, :6]).all() == inferred, name
        assert np.isnan(samples[i]).all() != inferred, name
    duplicated = np.flatnonzero(cube.source_id.values == 12345)
    assert len(duplicated) == 2
    assert all(flags[duplicated] & RowFlag.DUPLICATE_SOURCE_ID)

    is_clean = np.isin(cube.source_id.values, clean["source_id"])
    assert (flags[is_clean] == 0).all()
    ours = cube.isel(star=np.flatnonzero(is_clean)).sortby("source_id")
    theirs = reference.sortby("source_id")
    np.testing.assert_array_equal(ours.source_id.values, theirs.source_id.values)
    np.testing.assert_allclose(ours.samples.values, theirs.samples.values, rtol=2e-4, atol=2e-4)


BAD_VALUES = [np.nan, np.inf, -np.inf, -1.0, 0.0, 99.0, -999.0, 1e20, 1e-30]
COLUMNS = [*(f"{b}_mag" for b in BANDS), *(f"{b}_mag_err" for b in BANDS), "parallax",
           "parallax_error", "ra", "dec"]  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_setup(model_dir):
    model = PosteriorEstimator.load(model_dir)
    clean = synthetic_catalog(40, seed=7)
    reference = _adapter(model, clean)
    return model, clean, reference


def _adapter(model, frame):
    check = check_rows(frame, model.config.bands)
    out = infer_arrays(
        model, check.mag, check.mag_err, check.parallax, check.parallax_error, check.usable,
        4, 0, source_id=frame["source_id"].to_numpy(), batch_size=16,
    )  # fmt: skip
    return check, out


@settings(max_examples=25, deadline=None)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, 9), st.sampled_from(COLUMNS), st.sampled_from(BAD_VALUES)),
        min_size=1,
        max_size=25,
    ),
    duplicate=st.booleans(),
)
def test_fuzz_bad_rows_never_crash_nor_change_clean_rows(fuzz_setup, changes, duplicate):
    model, clean, (_, reference) = fuzz_setup
    bad = synthetic_catalog(10, seed=8)
    for row, column, value in changes:
        bad.loc[row, column] = value
    if duplicate:
        bad.loc[1, "source_id"] = bad.loc[0, "source_id"]
    frame = pd.concat([bad.iloc[:5], clean, bad.iloc[5:]], ignore_index=True)
    check, out = _adapter(model, frame)

    samples = out["samples"]
    assert np.isnan(samples[~check.usable]).all()
    assert np.isfinite(samples[check.usable][..., :6]).all()
    for band in BANDS:
        mag, err = frame[f"{band}_mag"].to_numpy(), frame[f"{band}_mag_err"].to_numpy()
        nonfinite = np.isinf(mag) | (np.isnan(mag) & ~np.isnan(err))
        assert (check.flags[nonfinite] != 0).all()
    np.testing.assert_array_equal(check.flags[5 : 5 + len(clean)], 0)
    np.testing.assert_allclose(
        samples[5 : 5 + len(clean)], reference["samples"], rtol=2e-4, atol=2e-4
    )
