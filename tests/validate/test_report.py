"""``ysoscale validate`` on small cubes built through the cube API: with and without a
truth table, CSV and HATS truth, subsets, and the errors a user can make."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.validate import WIDTH, toy_posteriors, truth_table, write_cube
from tests.validate.conftest import N_SAMPLES, N_STARS
from ysoscale.cli import main
from ysoscale.validate import LEVELS, coverage_tolerance

TRUTH_FIGURES = {"calibration", "sbc", "tarp", "predicted_vs_true", "p_young_reliability"}
POSTERIOR_FIGURES = {"kiel_cmd", "sky_p_young", "posterior_widths"}


def test_cli_writes_the_full_report(toy_report):
    out, printed = toy_report
    assert "index.html" in printed and "coverage" in printed
    page = (out / "index.html").read_text()
    for name in TRUTH_FIGURES | POSTERIOR_FIGURES:
        assert (out / f"{name}.png").stat().st_size > 5000, name
        assert f'id="fig-{name}"' in page and f'href="{name}.png"' in page
    assert page.count("<img ") == len(TRUTH_FIGURES | POSTERIOR_FIGURES)
    assert page.count('src="data:image/png;base64,') == page.count("<img ")
    for heading in ("Calibration", "SBC rank histograms", "TARP", "Predicted vs true",
                    "Accuracy per survey combination", "Flags", "Model card and run"):  # fmt: skip
        assert f">{heading}</h2>" in page
    assert "computed here as P(log10_age &lt; 7)" in page  # the toy cube has no p_young
    assert "No truth table" not in page
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["n_stars"] == N_STARS and numbers["n_truth_matched"] == N_STARS


def test_report_numbers_of_a_calibrated_cube(toy_report):
    numbers = json.loads((toy_report[0] / "report.json").read_text())
    expected = LEVELS * (N_SAMPLES - 1) / (N_SAMPLES + 1)
    tolerance = coverage_tolerance(expected, N_STARS, k=4.0)
    for param, curve in numbers["coverage"]["empirical"].items():
        assert np.all(np.abs(np.array(curve) - expected) < tolerance), param
    assert numbers["tarp"]["n"] == N_STARS
    assert numbers["tarp"]["max_deviation"] < 2.0 / np.sqrt(N_STARS)
    assert min(p["ks"] for p in numbers["sbc"].values()) > 1e-4
    groups = {row["group"] for row in numbers["accuracy"]}
    assert groups == {"all", "gaia", "gaia+tmass", "gaia+tmass+wise"}
    all_av = next(r for r in numbers["accuracy"] if r["group"] == "all" and r["param"] == "av")
    # posterior median of 63 samples vs a truth 0.3 mag from the mean: MAD ~ 0.6745 x 0.3
    assert all_av["n"] == N_STARS and abs(all_av["mad"] - 0.6745 * 0.3 * 1.008) < 0.03
    assert numbers["flags"]["clean"] == N_STARS


def test_without_truth_the_page_says_what_is_absent(toy_run, tmp_path, capsys):
    cube, _, _ = toy_run
    out = tmp_path / "report"
    assert main(["validate", "--cube", str(cube), "--out", str(out)]) == 0
    assert "no truth table" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    assert 'id="truth-absent"' in page and "No truth table was given" in page
    assert not any((out / f"{name}.png").exists() for name in TRUTH_FIGURES)
    for name in POSTERIOR_FIGURES:
        assert (out / f"{name}.png").exists(), name
    # no catalog: positions from the cube's healpix29, no CMD
    assert "positions from healpix29" in page and "the CMD is absent" in page
    numbers = json.loads((out / "report.json").read_text())
    assert "coverage" not in numbers and numbers["p_young"]["n_above_half"] >= 0


def test_csv_truth_subset_and_separate_catalog(toy_run, tmp_path):
    cube, table, _ = toy_run
    frame = pd.read_parquet(table)
    labels = frame[["source_id", "true_av", "true_log10_age"]].iloc[::2]  # half the stars
    labels.to_csv(tmp_path / "labels.csv", index=False)
    catalog = frame.drop(columns=[c for c in frame if c.startswith("true_")])
    catalog.loc[:9, ["tmass_j_mag", "wise_w1_mag"]] = [np.nan, 12.0]  # gaia+wise
    catalog.loc[10:19, ["gaia_g_mag", "gaia_bp_mag", "gaia_rp_mag"]] = np.nan  # no gaia
    catalog.to_parquet(tmp_path / "catalog.parquet")
    out = tmp_path / "report"
    args = ["validate", "--cube", str(cube), "--truth", str(tmp_path / "labels.csv"),
            "--catalog", str(tmp_path / "catalog.parquet"), "--out", str(out),
            "--max-stars", "400"]  # fmt: skip
    assert main(args) == 0
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["n_stars"] == 400 and numbers["n_cube"] == N_STARS
    assert 150 < numbers["n_truth_matched"] < 250
    assert set(numbers["coverage"]["empirical"]) == {"log10_age", "av"}
    assert numbers["catalog"].endswith("catalog.parquet")
    groups = {row["group"] for row in numbers["accuracy"]}  # rare combinations are pooled
    assert groups - {"all", "gaia", "gaia+tmass", "gaia+tmass+wise"} == {
        "other (4 combinations of < 20 stars each)"  # gaia+wise; tmass, tmass+wise, none
    }
    assert "random subset of 400" in (out / "index.html").read_text()


def test_hats_summary_beside_the_cube_and_as_truth(tmp_path):
    """The summary HATS catalog ``ysoscale infer`` writes beside the cube gives the catalog
    columns without options, and serves as the truth table (it keeps true_* columns)."""
    import lsdb

    samples, truth = toy_posteriors(200, 15, seed=2)
    source_id = np.arange(1, 201, dtype=np.int64)
    cube = write_cube(tmp_path / "posteriors.zarr", samples, source_id)
    frame = truth_table(source_id, truth)
    catalog = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", margin_threshold=None)
    catalog.write_catalog(tmp_path / "summary", as_collection=False, progress_bar=False)
    assert main(["validate", "--cube", str(cube), "--out", str(tmp_path / "plain")]) == 0
    page = (tmp_path / "plain" / "index.html").read_text()
    assert "the summary catalog beside the cube" in page and "the CMD is absent" not in page
    args = ["validate", "--cube", str(cube), "--truth", str(tmp_path / "summary"), "--out",
            str(tmp_path / "truth")]  # fmt: skip
    assert main(args) == 0
    numbers = json.loads((tmp_path / "truth" / "report.json").read_text())
    assert numbers["n_truth_matched"] == 200 and "coverage" in numbers
    assert {r["group"] for r in numbers["accuracy"]} == {"all", "gaia", "gaia+tmass",
                                                         "gaia+tmass+wise"}  # fmt: skip


def _error(args, capsys) -> str:
    assert main(args) == 2
    return capsys.readouterr().err


def test_bad_inputs_are_named(toy_run, tmp_path, capsys):
    cube, table, _ = toy_run
    out = str(tmp_path / "out")
    missing = tmp_path / "nope.zarr"
    assert f"cube {missing} does not exist" in _error(
        ["validate", "--cube", str(missing), "--out", out], capsys
    )
    not_a_cube = tmp_path / "empty.zarr"
    not_a_cube.mkdir()
    assert f"{not_a_cube} is not a posterior cube" in _error(
        ["validate", "--cube", str(not_a_cube), "--out", out], capsys
    )
    no_truth = tmp_path / "absent.parquet"
    assert f"table {no_truth} does not exist" in _error(
        ["validate", "--cube", str(cube), "--truth", str(no_truth), "--out", out], capsys
    )
    frame = pd.read_parquet(table)
    cases = {
        "no_id.csv": (frame.drop(columns="source_id"), "has no source_id column"),
        "no_labels.csv": (frame[["source_id", "ra"]], "has no true_<param> columns"),
        "other.csv": (
            frame[["source_id", "true_av"]].rename(columns={"true_av": "true_x"}),
            "is true_<param> for a cube parameter",
        ),  # fmt: skip
        "elsewhere.csv": (
            frame[["source_id", "true_av"]].assign(source_id=-5 - frame.index),
            "no source_id matches a star of the cube",
        ),  # fmt: skip
        "twice.csv": (pd.concat([frame, frame.iloc[:1]]), "occurs more than once"),
    }
    for name, (bad, message) in cases.items():
        bad.to_csv(tmp_path / name, index=False)
        err = _error(["validate", "--cube", str(cube), "--truth", str(tmp_path / name),
                      "--out", out], capsys)  # fmt: skip
        assert str(tmp_path / name) in err and message in err, (name, err)
    (tmp_path / "labels.txt").write_text("source_id\n1\n")
    assert "unknown table format" in _error(
        ["validate", "--cube", str(cube), "--truth", str(tmp_path / "labels.txt"), "--out", out],
        capsys,
    )
    assert "max_stars must be at least 1" in _error(
        ["validate", "--cube", str(cube), "--out", out, "--max-stars", "0"], capsys
    )


@pytest.mark.parametrize("flag", ["PADDING", "NOT_WRITTEN"])
def test_flagged_rows(tmp_path, flag):
    """Padding rows are dropped; rows of an unfinished partition are counted, not plotted."""
    from ysoscale.infer.cube import FLAG_BITS

    samples, _ = toy_posteriors(100, 9, seed=4)
    flags = np.zeros(100, np.uint32)
    flags[:10] = FLAG_BITS[flag]
    samples[:10] = np.nan
    cube = write_cube(tmp_path / "c.zarr", samples, np.arange(100), flags=flags)
    assert main(["validate", "--cube", str(cube), "--out", str(tmp_path / "r")]) == 0
    numbers = json.loads((tmp_path / "r" / "report.json").read_text())
    if flag == "PADDING":
        assert numbers["n_stars"] == 90 and numbers["flags"]["clean"] == 90
    else:
        assert numbers["n_stars"] == 100 and numbers["flags"]["NOT_WRITTEN"] == 10


def test_a_weighted_cube_is_scored_by_its_weights(tmp_path):
    """Samples of a proposal twice as wide as the posterior, with the importance weights
    that make them the posterior: the report's coverage uses the weights (calibrated);
    the same samples without weights are under-confident."""
    n, n_samples, wide = 800, 400, 2.0
    samples, truth = toy_posteriors(n, n_samples, seed=8, scale=wide)
    mu = samples.mean(axis=1, keepdims=True)  # each star's posterior mean, to ~0.1 WIDTH
    # w = N(x; mu, W²) / N(x; mu, (2W)²), per parameter, up to a constant
    z = (samples - mu) / WIDTH
    log_weight = (-0.5 * z**2 * (1.0 - 1.0 / wide**2)).sum(axis=2)
    log_weight -= np.logaddexp.reduce(log_weight, axis=1, keepdims=True)
    source_id = np.arange(n, dtype=np.int64)
    truth_path = tmp_path / "truth.parquet"
    truth_table(source_id, truth).to_parquet(truth_path)
    numbers = {}
    for name, weights in (("weighted", log_weight), ("plain", None)):
        cube = write_cube(tmp_path / f"{name}.zarr", samples, source_id, log_weight=weights)
        out = tmp_path / f"report_{name}"
        assert main(["validate", "--cube", str(cube), "--truth", str(truth_path),
                     "--out", str(out)]) == 0  # fmt: skip
        numbers[name] = json.loads((out / "report.json").read_text())["coverage"]
    assert numbers["weighted"]["weighted"] is True and numbers["plain"]["weighted"] is False
    tolerance = coverage_tolerance(0.5, n, k=4.0)  # 4 sigma: the weights are from a fitted mu
    assert max(numbers["weighted"]["max_error"].values()) < tolerance
    assert min(numbers["plain"]["max_error"].values()) > 0.15  # twice too wide
