"""The photometry grid: layout, caching, law coverage, and accuracy against direct
integration at random off-node points."""

from __future__ import annotations

import numpy as np
import pytest

from ysoscale.physics.forward import ForwardModel
from ysoscale.physics.photometry import (
    DirectIntegrator,
    PhotometryGridSpec,
    build_photometry_grid,
    load_photometry_grid,
)

N_POINTS = 400


def test_layout(photometry_grid) -> None:
    assert photometry_grid.mag.dims == ("teff", "logg", "mh", "av", "rv", "band")
    assert photometry_grid.av.values.max() >= 30
    assert photometry_grid.rv.values.min() <= 2.3 and photometry_grid.rv.values.max() >= 5.6
    assert photometry_grid.attrs["law"] == "G23"


def test_second_load_is_a_no_op(photometry_grid) -> None:
    grid, built = load_photometry_grid(progress=False)
    assert not built
    np.testing.assert_array_equal(grid.mag.values, photometry_grid.mag.values)


def test_spec_rejects_bad_nodes_and_hash_tracks_inputs() -> None:
    with pytest.raises(ValueError, match="av_nodes"):
        PhotometryGridSpec(av_nodes=(0.0, 2.0, 1.0))
    assert PhotometryGridSpec().hash() != PhotometryGridSpec(law="F99", bands=("gaia_g",)).hash()


def test_law_that_misses_a_band_names_it() -> None:
    spec = PhotometryGridSpec(law="CCM89", bands=("gaia_g", "wise_w2"), rv_nodes=(3.1, 4.0))
    with pytest.raises(ValueError, match="wise_w2"):
        build_photometry_grid(spec, progress=False)


def _random_points(rng: np.random.Generator, spec: PhotometryGridSpec) -> list[dict]:
    points = []
    while len(points) < N_POINTS:
        teff = float(10 ** rng.uniform(np.log10(3000), np.log10(30000)))
        if 12000 < teff < 13000:  # the cell between PHOENIX and Kurucz has no spectrum
            continue
        points.append(
            {
                "teff": teff,
                "logg": float(rng.uniform(3.5, 5.0)),
                "mh": float(rng.uniform(-2.0, 0.5)),
                "av": float(rng.uniform(0.0, 30.0)),
                "rv": float(rng.uniform(2.3, 5.6)),
            }
        )
    return points


@pytest.fixture(scope="module")
def accuracy(photometry_grid):
    """|grid − direct| per point and band, for points where the grid is valid."""
    import torch

    rng = np.random.default_rng(7)
    spec = PhotometryGridSpec()
    model = ForwardModel(photometry_grid, dtype=torch.float64)
    direct_integration = DirectIntegrator(spec)
    deltas = []
    for point in _random_points(rng, spec):
        grid_result = model.atmospheric(**point, radius=1.0, distance=10.0)
        if not grid_result.valid[0]:
            continue
        direct = direct_integration(**point)
        deltas.append(np.abs(grid_result.mag[0] - direct))
    deltas = np.array(deltas)
    bands = list(photometry_grid.band.values)
    print(
        f"\ngrid vs direct integration, {len(deltas)} points × {len(bands)} bands: "
        f"median {np.median(deltas):.4f} mag, p99 {np.percentile(deltas, 99):.4f} mag"
    )
    for band, p99 in zip(bands, np.percentile(deltas, 99, axis=0), strict=True):
        print(f"  {band:<12} p99 {p99:.4f}")
    return deltas, bands


def test_grid_matches_direct_integration_median(accuracy) -> None:
    """Median |Δm| ≤ 0.005 mag over all bands and points (the issue's bound).

    The direct path interpolates the spectrum in log flux and integrates it; the grid
    interpolates band magnitudes. With ~4000 band-point pairs the median is stable to
    far better than the bound.
    """
    deltas, _ = accuracy
    assert len(deltas) > 0.6 * N_POINTS
    assert np.median(deltas) <= 0.005


def test_grid_matches_direct_integration_p99(accuracy) -> None:
    """99th percentile ≤ 0.02 mag over all bands and points (the issue's bound), and
    ≤ 0.01 over every band but GALEX.

    The direct path interpolates log-flux spectra and integrates them; the grid
    interpolates band magnitudes. The two separate most along R_V at high A_V, where a band
    magnitude curves in 1/R_V as A_V² times the spread of the extinction curve across the
    band, most in the GALEX bands (measured with the 11 default R_V nodes: all bands 0.009,
    GALEX FUV 0.028 / NUV 0.020, every other band ≤ 0.005). GALEX alone is held to 0.05 mag;
    the per-band numbers are printed.
    """
    deltas, bands = accuracy
    galex = [i for i, b in enumerate(bands) if b.startswith("galex")]
    others = [i for i in range(len(bands)) if i not in galex]
    assert np.percentile(deltas, 99) <= 0.02
    assert np.percentile(deltas[:, others], 99) <= 0.01
    assert np.percentile(deltas[:, galex], 99) <= 0.05


@pytest.mark.slow
def test_dask_build_equals_serial_build() -> None:
    """One task per R_V node on a LocalCluster gives the same grid as the serial loop."""
    from ysoscale.cluster import connect

    spec = PhotometryGridSpec(
        bands=("gaia_g", "tmass_ks"),
        av_nodes=(0.0, 1.0),
        rv_nodes=(3.1, 4.0),
        teff_range=(5000.0, 6000.0),
        disk_temps=(500.0, 1000.0),
    )
    serial = build_photometry_grid(spec, progress=False)
    with connect(workers=2) as client:
        distributed = build_photometry_grid(spec, progress=False, client=client)
    np.testing.assert_array_equal(serial.mag.values, distributed.mag.values)
