"""Shipped real samples: canonical schema, provenance, and a rebuild from the shared data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ysoscale.catalog.columns import validate_schema
from ysoscale.catalog.quality import check_rows
from ysoscale.catalog.samples import (
    GAIA_DR2_SYSTEMATIC,
    SAMPLES,
    build_samples,
    g_minus_rp,
    gaia_dr2_parallax_error,
    load_sample,
    sample_provenance,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED / "rho_oph_members").is_dir(), reason="shared data folder not present"
)
ROWS = {"rho_oph": 48, "scocen": 14437, "kepler": 2236}
BANDS = {
    "rho_oph": (
        "gaia_g",
        "gaia_bp",
        "gaia_rp",
        "tmass_j",
        "tmass_h",
        "tmass_ks",
        "wise_w1",
        "wise_w2",
        "wise_w3",
        "wise_w4",
    ),
    "scocen": ("gaia_g", "gaia_bp", "gaia_rp"),
    "kepler": ("sdss_g", "sdss_r", "sdss_i", "sdss_z", "tmass_j", "tmass_h", "tmass_ks"),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_shipped_sample_is_canonical(name: str) -> None:
    sample = load_sample(name)
    assert len(sample) == ROWS[name]
    assert validate_schema(dict(sample.dtypes)) == BANDS[name]
    assert sample["source_id"].is_unique
    assert {"parallax", "parallax_error"} <= set(sample.columns)
    check = check_rows(sample, BANDS[name])
    assert (check.flags == 0).all()
    assert check.usable.all()
    assert ((sample["ra"] >= 0) & (sample["ra"] < 360)).all()
    assert sample["dec"].between(-90, 90).all()


@pytest.mark.parametrize("name", SAMPLES)
def test_provenance_is_complete(name: str) -> None:
    record = load_sample(name).attrs["provenance"]
    assert record == sample_provenance(name)
    assert record["rows"] == ROWS[name]
    assert "MIT License" in record["licence"]
    assert record["conversion_notes"] and record["reference"]
    for source in record["sources"]:
        assert len(source["sha256"]) == 64
    assert record["columns"] == list(load_sample(name).columns)
    size = (Path(__file__).resolve().parents[2] / "ysoscale/data/samples" / record["file"]).stat()
    assert size.st_size < 1_000_000
    assert set(sample_provenance()) == set(SAMPLES)


def test_unknown_sample() -> None:
    with pytest.raises(ValueError, match="rho_oph"):
        load_sample("rho-oph")


def test_rho_oph_content() -> None:
    rho = load_sample("rho_oph")
    assert set(rho["sed_class"]) == {"Class II", "Class III", "Photosphere"}
    assert (rho["sed_class"] == "Class II").sum() == 36
    assert rho["parallax_error_assumed"].all()
    # ρ Oph lies at ~140 pc
    assert 6.0 < rho["parallax"].median() < 8.0
    # Gaia errors carry the DR2 -> DR3 term; no error is below it
    assert (rho["gaia_g_mag_err"] >= np.float32(GAIA_DR2_SYSTEMATIC)).all()
    # disks: Class II stars have redder Ks - W3 than photospheres
    excess = rho["tmass_ks_mag"] - rho["wise_w3_mag"]
    by_class = excess.groupby(rho["sed_class"]).median()
    assert by_class["Class II"] > by_class["Photosphere"] + 0.5
    # the photospheres' Gaia colours agree with synthetic DR3 colours to ~0.1 mag
    photo = rho[rho["sed_class"] == "Photosphere"]
    colour = photo["gaia_bp_mag"] - photo["gaia_rp_mag"]
    residual = photo["gaia_g_mag"] - photo["gaia_rp_mag"] - g_minus_rp(colour)
    assert np.abs(residual).max() < 0.1


def test_scocen_content() -> None:
    sco = load_sample("scocen")
    assert sco["gaia_bp_rp_derived"].all()
    np.testing.assert_allclose(
        sco["gaia_bp_mag"] - sco["gaia_rp_mag"], sco["gaia_dr2_bp_rp"], atol=2e-6
    )
    assert sco["pms_flag"].dtype == bool and sco["pms_flag"].all()
    assert 0 < sco["variable_flag"].sum() < len(sco)
    assert sco["population"].isna().sum() > 0 and "D2b" in set(sco["population"])
    assert (sco["parallax"] >= 5.0).all()


def test_kepler_content() -> None:
    kep = load_sample("kepler")
    for label in ("teff", "logg", "feh"):
        assert kep[label].notna().all() and (kep[f"{label}_err"] > 0).all()
    assert kep["logg"].between(1.0, 5.0).all()
    assert kep["sdss_g_mag"].isna().sum() == 33  # -99 in the source
    assert (kep["sdss_g_mag_err"].dropna() >= np.float32(0.05)).all()
    assert kep["tmass_null_error"].sum() > 0
    assert set(kep["label_source"]) == {"apo", "spc"}


def test_dr2_parallax_error_law() -> None:
    sigma = gaia_dr2_parallax_error(np.array([10.0, 15.0, 17.0, 20.0, 21.0, np.nan]))
    np.testing.assert_allclose(sigma[1:4], np.hypot([0.04, 0.1, 0.7], 0.1))
    assert sigma[0] == sigma[1] and sigma[4] > sigma[3] and np.isnan(sigma[5])


@needs_shared
def test_provenance_matches_shared_sources() -> None:
    for name in SAMPLES:
        for source in sample_provenance(name)["sources"]:
            digest = hashlib.sha256((SHARED / source["path"]).read_bytes()).hexdigest()
            assert digest == source["sha256"], source["path"]


@needs_shared
def test_build_reproduces_the_shipped_samples(tmp_path: Path) -> None:
    written = build_samples(SHARED, tmp_path)
    assert set(written) == set(SAMPLES)
    for name, path in written.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), load_sample(name))
    shipped = sample_provenance()
    rebuilt = json.loads((tmp_path / "provenance.json").read_text(encoding="utf-8"))
    for name in SAMPLES:
        assert rebuilt[name] == shipped[name]


@needs_shared
def test_scocen_keeps_published_g_and_colour() -> None:
    table = pd.read_fwf(SHARED / "scocen_pms" / "damiani_members.txt", usecols=range(13))
    sco = load_sample("scocen")
    np.testing.assert_array_equal(sco["gaia_g_mag"], table["Gmag"].to_numpy(np.float32))
    np.testing.assert_array_equal(sco["source_id"], table["source_id"])
    assert (sco["s_flag"] == table["S"].str.strip()).all()
