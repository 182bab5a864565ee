"""Ingest: lsdb/HATS catalogs, crossmatch with margins, the canonical catalog on disk.

The synthetic sky (``sky`` fixture) has a primary (Gaia) and a secondary (2MASS) survey
with known answers: true counterparts at offsets inside the radius, pairs straddling
HEALPix partition borders (the margin cache is what matches them), a second candidate
inside the radius that must lose to the nearest one, decoys outside the radius and lone
secondary stars. Small ``partition_rows`` forces many partitions.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import lsdb
import numpy as np
import pandas as pd
import pytest
from hats.pixel_math.healpix_shim import radec2pix

from ysoscale.catalog.columns import SchemaError, validate_schema
from ysoscale.catalog.crossmatch import (
    crossmatch_to_primary,
    margin_order_for,
    secondary_columns,
)
from ysoscale.catalog.ingest import file_format, ingest, ingest_canonical, read_table
from ysoscale.cli import main

pytestmark = [
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
    pytest.mark.filterwarnings("ignore:Ignoring margin_threshold:RuntimeWarning"),
]

RADIUS = 1.0  # arcsec
BORDER_ORDER = 3  # partitions are at this order or finer, so its borders are partition borders
PARTITION_ROWS = 40
ARCSEC = 1.0 / 3600.0
RA_RANGE, DEC_RANGE = (40.0, 52.0), (-6.0, 6.0)


def _shift(ra, dec, east_arcsec, north_arcsec):
    """Position offset by small angles east and north (arcsec)."""
    return (
        ra + east_arcsec * ARCSEC / np.cos(np.radians(dec)),
        dec + north_arcsec * ARCSEC,
    )


def _separation(ra1, dec1, ra2, dec2):
    """Great-circle distance in arcsec (haversine)."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600.0


def _border_points(order: int, decs) -> list[tuple[float, float]]:
    """Points on borders between order-``order`` HEALPix pixels, bisected along ra."""
    points = []
    for dec in decs:
        grid = np.linspace(*RA_RANGE, 2001)
        pixels = radec2pix(order, grid, np.full_like(grid, dec))
        for k in np.flatnonzero(np.diff(pixels)):
            lo, hi = grid[k], grid[k + 1]
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                same = radec2pix(order, mid, dec) == radec2pix(order, lo, dec)
                lo, hi = (mid, hi) if same else (lo, mid)
            points.append((0.5 * (lo + hi), float(dec)))
    return points


def _make_sky(seed: int = 20261122) -> dict:
    rng = np.random.default_rng(seed)
    n_random = 300
    ra = list(rng.uniform(*RA_RANGE, n_random))
    dec = list(rng.uniform(*DEC_RANGE, n_random))
    borders = _border_points(BORDER_ORDER, np.linspace(-5.0, 5.0, 5))
    primary_border = []
    for b_ra, b_dec in borders:
        p_ra, p_dec = _shift(b_ra, b_dec, -0.35, 0.0)
        ra.append(p_ra)
        dec.append(p_dec)
        primary_border.append(len(ra) - 1)
    ra, dec = np.array(ra), np.array(dec)
    n = len(ra)
    source_id = np.arange(n, dtype=np.int64) * 7 + 1000

    rows: list[tuple[str, float, float]] = []  # secondary (id, ra, dec)
    expected: dict[int, tuple[str, float]] = {}  # source_id -> (counterpart id, distance)
    unmatched: set[str] = set()

    def add(kind: str, s_ra: float, s_dec: float) -> str:
        name = f"{kind}{len(rows)}"
        rows.append((name, s_ra, s_dec))
        return name

    order = rng.permutation(n_random)
    true, doubles, decoys = order[:220], order[220:235], order[235:265]
    for i in true:
        r, angle = rng.uniform(0.0, 0.85), rng.uniform(0, 2 * np.pi)
        s_ra, s_dec = _shift(ra[i], dec[i], r * np.cos(angle), r * np.sin(angle))
        expected[source_id[i]] = (add("T", s_ra, s_dec), _separation(ra[i], dec[i], s_ra, s_dec))
    for i in doubles:  # nearest at 0.2", a second candidate at 0.7" that must stay unmatched
        s_ra, s_dec = _shift(ra[i], dec[i], 0.2, 0.0)
        expected[source_id[i]] = (add("N", s_ra, s_dec), 0.2)
        unmatched.add(add("F", *_shift(ra[i], dec[i], 0.0, -0.7)))
    for i in decoys:  # only a star outside the radius
        r, angle = rng.uniform(1.3, 4.0), rng.uniform(0, 2 * np.pi)
        unmatched.add(add("D", *_shift(ra[i], dec[i], r * np.cos(angle), r * np.sin(angle))))
    for i in primary_border:  # counterpart 0.7" away, across the border
        s_ra, s_dec = _shift(ra[i], dec[i], 0.7, 0.0)
        expected[source_id[i]] = (add("B", s_ra, s_dec), 0.7)
    lone_ra, lone_dec = rng.uniform(*RA_RANGE, 30), rng.uniform(*DEC_RANGE, 30)
    for s_ra, s_dec in zip(lone_ra, lone_dec, strict=True):
        unmatched.add(add("L", s_ra, s_dec))

    ids, s_ra, s_dec = (np.array(col) for col in zip(*rows, strict=True))
    gaia = pd.DataFrame(
        {
            "source_id": source_id,
            "ra": ra,
            "dec": dec,
            "parallax": rng.uniform(0.5, 5.0, n),
            "parallax_error": np.full(n, 0.05),
            "gaia_g_mag": rng.uniform(10.0, 19.0, n).astype(np.float32),
            "gaia_g_mag_err": np.full(n, 0.003, dtype=np.float32),
        }
    )
    tmass = pd.DataFrame(
        {
            "source_id": ids,
            "ra": s_ra,
            "dec": s_dec,
            "tmass_j_mag": rng.uniform(9.0, 16.0, len(ids)).astype(np.float32),
            "tmass_j_mag_err": np.full(len(ids), 0.03, dtype=np.float32),
            "tmass_quality": np.zeros(len(ids), dtype=np.uint32),
        }
    ).sample(frac=1.0, random_state=1)  # no help from the input order
    # the test's own premises: primaries far apart, lone stars far from every primary
    gap = _separation(ra[:, None], dec[:, None], ra[None, :], dec[None, :])
    assert np.sort(gap, axis=1)[:, 1].min() > 10.0
    assert _separation(lone_ra[:, None], lone_dec[:, None], ra, dec).min() > 10.0
    return {
        "gaia": gaia,
        "tmass": tmass,
        "expected": expected,
        "unmatched": unmatched,
        "border": [int(source_id[i]) for i in primary_border],
    }


@pytest.fixture(scope="module")
def sky() -> dict:
    return _make_sky()


@pytest.fixture(scope="module")
def ingested(sky, tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("ingest") / "gaia_tmass"
    report = ingest(
        {"gaia": sky["gaia"], "tmass": sky["tmass"]},
        out,
        native=False,
        radius_arcsec=RADIUS,
        partition_rows=PARTITION_ROWS,
        write_unmatched=True,
        progress=False,
    )
    frame = lsdb.open_catalog(out).compute(progress_bar=False)
    return out, report, frame


def test_border_pairs_straddle_partitions(sky) -> None:
    gaia = sky["gaia"]
    catalog = lsdb.from_dataframe(gaia, partition_rows=PARTITION_ROWS, margin_threshold=None)
    orders = [pixel.order for pixel in catalog.get_healpix_pixels()]
    assert len(orders) >= 8 and min(orders) >= BORDER_ORDER
    assert len(sky["border"]) >= 6
    tmass = sky["tmass"].set_index("source_id")
    for source_id in sky["border"]:
        p = gaia.loc[gaia.source_id == source_id].iloc[0]
        s = tmass.loc[sky["expected"][source_id][0]]
        assert radec2pix(BORDER_ORDER, p.ra, p.dec) != radec2pix(BORDER_ORDER, s.ra, s.dec)


def test_every_primary_row_exactly_once(sky, ingested) -> None:
    _, report, frame = ingested
    assert report.rows == len(frame) == len(sky["gaia"])
    assert sorted(frame["source_id"]) == sorted(sky["gaia"]["source_id"])
    merged = sky["gaia"].merge(frame, on="source_id", suffixes=("", "_out"))
    np.testing.assert_array_equal(merged["ra"], merged["ra_out"])
    np.testing.assert_array_equal(merged["gaia_g_mag"], merged["gaia_g_mag_out"])


def test_counterparts_are_the_nearest_within_the_radius(sky, ingested) -> None:
    _, _, frame = ingested
    frame = frame.set_index("source_id")
    expected = sky["expected"]
    got = frame["tmass_id"].to_dict()
    for source_id, found in got.items():
        if source_id in expected:
            assert found == expected[source_id][0], source_id
            distance = frame.at[source_id, "tmass_match_arcsec"]
            assert distance == pytest.approx(expected[source_id][1], abs=1e-3)
        else:
            assert pd.isna(found), source_id
            assert pd.isna(frame.at[source_id, "tmass_j_mag"])
    assert all(pd.notna(got[s]) for s in sky["border"])
    assert frame["tmass_match_arcsec"].max() <= RADIUS


def test_unmatched_secondary_rows_are_counted_and_written(sky, ingested) -> None:
    out, report, _ = ingested
    stats = report.survey("tmass")
    assert stats.input_rows == len(sky["tmass"])
    assert stats.matched_rows == len(sky["expected"])
    assert stats.unmatched_rows == len(sky["unmatched"])
    assert stats.shared_rows == 0
    lost = lsdb.open_catalog(stats.unmatched_path).compute(progress_bar=False)
    assert set(lost["tmass_id"]) == sky["unmatched"]
    assert Path(stats.unmatched_path).is_relative_to(out)


def test_catalog_reads_back_canonical(ingested) -> None:
    out, report, frame = ingested
    catalog = lsdb.open_catalog(out)
    columns = list(catalog.columns)
    assert columns[:9] == [
        "source_id",
        "ra",
        "dec",
        "parallax",
        "parallax_error",
        "gaia_g_mag",
        "gaia_g_mag_err",
        "tmass_j_mag",
        "tmass_j_mag_err",
    ]
    assert {"tmass_id", "tmass_quality", "tmass_match_arcsec", "tmass_ra"} <= set(columns)
    assert validate_schema(dict(catalog.dtypes)) == ("gaia_g", "tmass_j") == report.bands
    assert catalog.hc_structure.catalog_info.ra_column == "ra"
    assert (out / "ingest_report.json").is_file()
    assert not (out / "_ingest_tmp").exists()


def _native_gaia(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_id": frame.source_id,
            "ra": frame.ra,
            "dec": frame.dec,
            "parallax": frame.parallax,
            "parallax_error": frame.parallax_error,
            **{f"phot_{b}_mean_mag": frame.gaia_g_mag + k for k, b in enumerate(["g", "bp", "rp"])},
            **{f"phot_{b}_mean_flux_over_error": 500.0 for b in ["g", "bp", "rp"]},
        }
    )


def _native_tmass(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "designation": frame.source_id,
            "ra": frame.ra,
            "dec": frame.dec,
            **{f"{b}_m": frame.tmass_j_mag for b in "jhk"},
            **{f"{b}_msigcom": 0.03 for b in "jhk"},
            "ph_qual": "AAU",
            "cc_flg": "000",
        }
    )


def _native_wise(gaia: pd.DataFrame) -> pd.DataFrame:
    """Counterparts 0.3" east of the first ten Gaia stars."""
    ra, dec = _shift(gaia.ra.to_numpy()[:10], gaia.dec.to_numpy()[:10], 0.3, 0.0)
    return pd.DataFrame(
        {
            "designation": [f"W{k}" for k in range(10)],
            "ra": ra,
            "dec": dec,
            **{f"w{k}mpro": 12.0 for k in range(1, 5)},
            **{f"w{k}sigmpro": 0.05 for k in range(1, 5)},
            "ph_qual": "AAAA",
            "cc_flags": "0000",
        }
    )


@pytest.fixture(scope="module")
def native_files(sky, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("native")
    gaia = sky["gaia"].iloc[::3]  # keep the CLI runs small
    tmass = sky["tmass"][sky["tmass"].source_id.str.startswith(("T", "B", "L"))]
    paths = {name: folder / f"{name}.csv" for name in ("gaia", "tmass", "wise")}
    _native_gaia(gaia).to_csv(paths["gaia"], index=False)
    _native_tmass(tmass).to_csv(paths["tmass"], index=False)
    _native_wise(gaia).to_csv(paths["wise"], index=False)
    return paths


@pytest.fixture(scope="module")
def cli_ingested(native_files, tmp_path_factory) -> tuple[Path, str]:
    """``ysoscale ingest`` on the native CSV files (lsdb route): output and stdout."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("cli") / "cat"
    args = ["ingest", "--out", str(out), "--radius", "1.0", "--partition-rows", "30"]
    args += [f"{name}={path}" for name, path in native_files.items()]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(args) == 0
    return out, stdout.getvalue()


def test_cli_round_trip_on_native_csv(cli_ingested, native_files, sky) -> None:
    out, stdout = cli_ingested
    assert "tmass:" in stdout and "wise:" in stdout
    frame = lsdb.open_catalog(out).compute(progress_bar=False).set_index("source_id")
    gaia = pd.read_csv(native_files["gaia"])
    assert sorted(frame.index) == sorted(gaia.source_id)
    wanted = {
        "gaia_g_mag",
        "gaia_rp_mag_err",
        "parallax_error",
        "tmass_ks_mag",
        "wise_w4_mag_err",
        "gaia_quality",
        "tmass_quality",
        "wise_quality",
        "wise_match_arcsec",
    }
    assert wanted <= set(frame.columns)
    # 2MASS Ks is 'U' (upper limit) in ph_qual: a non-detection, flagged, not dropped
    assert frame["tmass_ks_mag"].isna().all()
    expected = {s: t[0] for s, t in sky["expected"].items() if s in frame.index}
    assert frame["tmass_id"].dropna().to_dict() == {
        s: t for s, t in expected.items() if t.startswith(("T", "B"))
    }
    wise = frame["wise_id"].dropna()
    assert len(wise) == 10
    np.testing.assert_allclose(frame.loc[wise.index, "wise_match_arcsec"], 0.3, atol=1e-3)


def test_cli_canonical_table(sky, tmp_path, capsys) -> None:
    path = tmp_path / "canonical.parquet"
    sky["gaia"].to_parquet(path)
    out = tmp_path / "cat"
    args = ["ingest", "--out", str(out), "--canonical", str(path)]
    assert main(args) == 0
    frame = lsdb.open_catalog(out).compute(progress_bar=False)
    assert sorted(frame["source_id"]) == sorted(sky["gaia"]["source_id"])
    assert list(frame.columns) == list(sky["gaia"].columns)

    assert main(args) == 2  # the catalog is there now: refuse to touch it
    assert "not empty" in capsys.readouterr().err
    sky["gaia"].head(10).to_parquet(path)
    assert main([*args, "--overwrite"]) == 0
    assert len(lsdb.open_catalog(out).compute(progress_bar=False)) == 10


def test_other_primary_takes_parallax_from_gaia(sky, tmp_path) -> None:
    tmass = sky["tmass"][sky["tmass"].source_id.str.startswith("T")].head(8)
    gaia = sky["gaia"]
    report = ingest(
        {"tmass": tmass, "gaia": gaia},
        tmp_path / "cat",
        primary="tmass",
        native=False,
        progress=False,
    )
    frame = lsdb.open_catalog(tmp_path / "cat").compute(progress_bar=False)
    assert report.rows == len(frame) == len(tmass)
    assert list(frame.columns[:5]) == ["source_id", "ra", "dec", "parallax", "parallax_error"]
    truth = gaia.set_index("source_id")["parallax"]
    np.testing.assert_allclose(frame["parallax"], truth.loc[frame["gaia_id"]].to_numpy())
    assert report.survey("gaia").unmatched_rows == len(gaia) - len(tmass)


def test_clear_errors(sky, tmp_path, capsys) -> None:
    gaia, tmass = sky["gaia"], sky["tmass"]
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="unknown survey"):
        ingest({"gaia": gaia, "twomass": tmass}, out, native=False)
    with pytest.raises(ValueError, match="primary survey 'gaia'"):
        ingest({"tmass": tmass}, out, native=False)
    with pytest.raises(FileNotFoundError, match="no_such.csv"):
        ingest({"gaia": gaia, "tmass": tmp_path / "no_such.csv"}, out, native=False)
    bad = tmass.rename(columns={"tmass_j_mag": "tmass_J_mag"})
    with pytest.raises(SchemaError, match="tmass_J_mag") as error:
        ingest({"gaia": gaia, "tmass": bad}, out, native=False)
    assert "tmass_J_mag" in error.value.columns
    with pytest.raises(ValueError, match="twice the radius"):
        ingest({"gaia": gaia, "tmass": tmass}, out, native=False, margin_arcsec=1.0)
    nowhere = gaia.assign(ra=np.where(gaia.index == 5, np.nan, gaia.ra))
    with pytest.raises(ValueError, match="no valid ra/dec"):
        ingest_canonical(nowhere, out)
    with pytest.raises(ValueError, match="unknown table format"):
        file_format("gaia.txt")
    assert not out.exists()  # nothing was written by any of them

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a HATS catalog"):
        ingest_canonical(gaia, tmp_path / "busy", overwrite=True)
    assert main(["ingest", "--out", str(out), "gaia"]) == 2
    assert "SURVEY=PATH" in capsys.readouterr().err


def test_crossmatch_needs_a_margin(sky) -> None:
    primary = lsdb.from_dataframe(sky["gaia"].head(20), margin_threshold=None)
    frame = sky["tmass"].head(20)
    secondary = lsdb.from_dataframe(
        frame.rename(columns=secondary_columns("tmass", frame.columns)),
        ra_column="tmass_ra",
        dec_column="tmass_dec",
        margin_threshold=None,
    )
    with pytest.raises(ValueError, match="margin cache"):
        crossmatch_to_primary(primary, {"tmass": secondary})


def test_margin_order_and_renames() -> None:
    assert margin_order_for(5, 2.0) == 9
    assert margin_order_for(14, 2.0) == 16
    with pytest.raises(ValueError, match="partition_rows"):
        margin_order_for(16, 2.0)
    assert secondary_columns("gaia", ["source_id", "gaia_id", "ra", "parallax_error"]) == {
        "source_id": None,
        "ra": "gaia_ra",
        "parallax_error": "gaia_parallax_error",
    }


def test_read_table_formats(sky, tmp_path) -> None:
    from astropy.table import Table

    frame = sky["gaia"].head(5)
    Table.from_pandas(frame).write(tmp_path / "t.fits")
    frame.to_csv(tmp_path / "t.csv", sep="\t", index=False)
    for name in ("t.fits", "t.csv"):
        back = read_table(tmp_path / name)
        np.testing.assert_allclose(back["ra"], frame["ra"])
        assert list(back["source_id"]) == list(frame["source_id"])


@pytest.mark.slow
def test_hats_import_route_gives_the_same_catalog(cli_ingested, native_files, tmp_path) -> None:
    from astropy.table import Table

    from ysoscale.cluster import connect

    fits = tmp_path / "gaia.fits"
    Table.from_pandas(pd.read_csv(native_files["gaia"])).write(fits)
    out = tmp_path / "cat"
    with connect(workers=1) as client:
        report = ingest(
            {"gaia": fits, "tmass": native_files["tmass"]},
            out,
            partition_rows=30,
            importer="hats-import",
            client=client,
            progress=False,
        )
    assert set(report.importers.values()) == {"hats-import"}
    got = lsdb.open_catalog(out).compute(progress_bar=False)
    reference = lsdb.open_catalog(cli_ingested[0]).compute(progress_bar=False)
    a, b = (f.sort_values("source_id").reset_index(drop=True) for f in (got, reference))
    pd.testing.assert_frame_equal(a, b[a.columns], check_dtype=False)
    reference_report = json.loads((cli_ingested[0] / "ingest_report.json").read_text())
    assert asdict(report.survey("tmass")) == reference_report["surveys"][0]
