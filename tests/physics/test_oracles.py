"""External-oracle tests of ysoscale's synthetic photometry.

The oracles (see :mod:`tests.physics.oracles`) are computed by other groups from their own
copies of the model atmospheres and passbands:

* ARIADNE's pre-integrated BT-Settl band fluxes (Vines & Jenkins 2022): same model family
  as our primary grid, so at the shared nodes our spectra x our passbands x our
  integration must reproduce their absolute surface fluxes.
* MIST v1.2 bolometric corrections (Choi et al. 2016), from ATLAS12/SYNTHE spectra with
  CCM89 extinction: an independent check of our extinction coefficients A_band/A_V and of
  our bolometric corrections, including the AB/Vega zero points.

The tests compare at exact grid nodes of both sides (no interpolation). Every tolerance is
the one the issue set; where a band misses it for a documented reason that is not a
defect of our pipeline the test is marked xfail with that reason instead of loosening it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.physics.oracles import (
    MIST_MBOL_SUN,
    load_ariadne_grid,
    load_mist_bc,
)
from ysoscale.physics.extinction import extinction_curve, law_wavelength_range
from ysoscale.physics.passbands import BAND_IDS, band_flux_matrix, get_bands, synthetic_magnitudes
from ysoscale.physics.spectra import load_spectral_grid

SEED = 20251122
TEFF_RANGE = (3000.0, 10000.0)
N_SOLAR_NODES = 200
N_NODES_PER_MH = 40

SIGMA_SB = 5.670374419e-5  # erg s-1 cm-2 K-4 (CODATA 2018)
L_SUN = 3.828e33  # erg s-1, IAU 2015 B3 nominal
R_SUN = 6.957e10  # cm, IAU 2015 B3 nominal
PARSEC = 3.0856775814913673e18  # cm
H_C_OVER_K_AA = 1.438776877e8  # hc/k in Å K

# Nodes for the MIST comparisons: on both grids ([Fe/H] = 0 MIST node; BT-Settl nodes are
# every 100 K to 7000 K then every 200 K, MIST every 250 K), main-sequence gravities that
# exist in both atmosphere grids at every one of these temperatures.
MIST_TEFFS = (4000.0, 4500.0, 5000.0, 5500.0, 6000.0, 6500.0, 7000.0, 8000.0, 9000.0, 10000.0)
MIST_LOGGS = (4.0, 4.5)
MIST_AV = 1.0

ABS_FLUX_RTOL = 0.01  # issue: band fluxes within 1 % of ARIADNE
A_RATIO_RTOL = 0.03  # issue: A_band/A_V within 3 % of MIST
BC_ATOL = 0.03  # issue: BCs within 0.03 mag of MIST
FLUX_CONSERVATION_RTOL = 0.01  # 1 % of sigma T^4 = 0.011 mag of BC (a third of BC_ATOL)

GAIA_DR2_CURVES = {"gaia_g": "GaiaDR2v2_G", "gaia_bp": "GaiaDR2v2_BP", "gaia_rp": "GaiaDR2v2_RP"}
GAIA_XFAIL = pytest.mark.xfail(
    reason=(
        "ARIADNE integrated the revised Gaia DR2 passbands (pyphot GaiaDR2v2_*), ysoscale "
        "uses the EDR3/DR3 passbands (Riello et al. 2021): a different curve, so a "
        "colour-dependent 0.5-1.5 % (up to ~10 % in G for cool giants) difference is "
        "expected; test_ariadne_gaia_dr2_curves checks the same spectra through ARIADNE's "
        "curves"
    ),
    strict=False,
)

# Red/IR bands whose ARIADNE agreement at [M/H] = 0 is at the 0.5 % level: used to test the
# non-solar nodes of the grid, so that a failure there is about the spectra themselves.
METALLICITY_PROBE_BANDS = (
    "sdss_z",
    "ps1_z",
    "ps1_y",
    "skymapper_z",
    "tmass_j",
    "tmass_h",
    "tmass_ks",
    "wise_w1",
    "wise_w2",
    "wise_w3",
    "wise_w4",
)


def _band_params(ids):
    return [
        pytest.param(band, marks=GAIA_XFAIL, id=band) if band.startswith("gaia_") else band
        for band in ids
    ]


def _format_worst(dev, labels, k=5):
    order = np.argsort(-np.abs(dev))[:k]
    return "; ".join(f"{labels[i]}: {dev[i]:+.4f}" for i in order)


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid():
    """Our BT-Settl spectral grid (the pipeline's primary library)."""
    return load_spectral_grid()


@pytest.fixture(scope="module")
def ariadne_nodes(grid):
    """ARIADNE BT-Settl rows on nodes that our grid computed, with our grid indices.

    ARIADNE's table holds 1452 rows on 617 nodes that occur two or three times with
    different values (all at logg 4.0/4.5, [Fe/H] -1.5..+0.5); those nodes are ambiguous
    and dropped. Returns the table restricted to ``TEFF_RANGE`` plus our grid indices
    ``i_teff, i_logg, i_mh``, keeping only nodes our grid computed (``valid``).
    """
    table = load_ariadne_grid("BT_Settl")
    table = table.drop_duplicates(["teff", "logg", "mh"], keep=False)
    table = table[table.teff.between(*TEFF_RANGE)].reset_index(drop=True)
    index = {}
    for name in ("teff", "logg", "mh"):
        axis = grid[name].values
        pos = np.clip(np.searchsorted(axis, table[name].to_numpy()), 0, axis.size - 1)
        index[name] = np.where(np.isclose(axis[pos], table[name].to_numpy()), pos, -1)
    on_grid = (index["teff"] >= 0) & (index["logg"] >= 0) & (index["mh"] >= 0)
    table = table[on_grid].reset_index(drop=True)
    for name in index:
        table[f"i_{name}"] = index[name][on_grid]
    valid = grid.valid.values[table.i_teff, table.i_logg, table.i_mh]
    return table[valid].reset_index(drop=True)


def _sample(table, n, seed):
    rng = np.random.default_rng(seed)
    take = rng.choice(len(table), size=min(n, len(table)), replace=False)
    return table.iloc[np.sort(take)].reset_index(drop=True)


@pytest.fixture(scope="module")
def solar_sample(ariadne_nodes):
    return _sample(ariadne_nodes[ariadne_nodes.mh == 0.0], N_SOLAR_NODES, SEED)


def _spectra(grid, nodes):
    log_flux = grid.log10_flux.values[nodes.i_teff, nodes.i_logg, nodes.i_mh]
    return 10.0 ** log_flux.astype(float)


def _node_labels(nodes):
    return [
        f"Teff={t:.0f} logg={g:.1f} [M/H]={m:+.1f}"
        for t, g, m in zip(nodes.teff, nodes.logg, nodes.mh, strict=True)
    ]


# --------------------------------------------------------------------------------------
# 1. absolute band fluxes vs ARIADNE's BT-Settl table
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("band_id", _band_params(BAND_IDS))
def test_ariadne_btsettl_band_flux_solar(grid, solar_sample, band_id):
    """Photon-weighted mean surface flux matches ARIADNE's BT-Settl value within 1 %.

    200 [M/H] = 0 nodes (seeded sample, Teff 3000-10000 K, all gravities) computed by both
    BT-Settl grids. ARIADNE's numbers are absolute surface fluxes (erg/s/cm²/µm, converted
    to per Å), the same photon-weighted mean our ``band_flux_matrix`` computes, so the
    comparison needs no normalisation and no zero point: it tests our spectra, our curves
    and our integration together. Tolerance 1 % (the issue's): both sides integrate the
    same model atmospheres, with curves from the same pyphot library, so anything above
    the ~0.1-0.5 % level of resampling differences is a defect on one side.
    """
    (band,) = get_bands([band_id])
    ours = _spectra(grid, solar_sample) @ band_flux_matrix(grid.wavelength.values, [band])[:, 0]
    ratio = ours / solar_sample[band_id].to_numpy()
    dev = ratio - 1.0
    worst = np.max(np.abs(dev))
    assert worst <= ABS_FLUX_RTOL, (
        f"{band_id}: max |ours/ARIADNE - 1| = {worst:.4f} > {ABS_FLUX_RTOL} over "
        f"{len(dev)} nodes (median ratio {np.median(ratio):.4f}); worst: "
        f"{_format_worst(dev, _node_labels(solar_sample))}"
    )


@pytest.mark.parametrize("band_id", list(GAIA_DR2_CURVES))
def test_ariadne_gaia_dr2_curves(grid, solar_sample, band_id):
    """Our spectra and integration through ARIADNE's own Gaia curves agree within 1 %.

    Isolates the Gaia xfails above: the same spectra and ``band_flux_matrix`` as in the
    pipeline, but with the revised DR2 passband (pyphot ``GaiaDR2v2_*``) that ARIADNE
    integrated instead of our DR3 curve. Tolerance 1 %, as for every other band.
    """
    pyphot = pytest.importorskip("pyphot")
    curve = pyphot.get_library()[GAIA_DR2_CURVES[band_id]]
    lam = np.asarray(curve.wavelength.to("AA").value, dtype=float)
    trans = np.clip(np.asarray(curve.transmit, dtype=float), 0.0, None)
    order = np.argsort(lam)
    (band,) = get_bands([band_id])
    dr2 = dataclasses.replace(
        band,
        wavelength=lam[order],
        transmission=trans[order] / trans.max(),
        source_package="pyphot",
        source_name=GAIA_DR2_CURVES[band_id],
    )
    ours = _spectra(grid, solar_sample) @ band_flux_matrix(grid.wavelength.values, [dr2])[:, 0]
    dev = ours / solar_sample[band_id].to_numpy() - 1.0
    worst = np.max(np.abs(dev))
    assert worst <= ABS_FLUX_RTOL, (
        f"{band_id} (DR2 curve): max |ours/ARIADNE - 1| = {worst:.4f} > {ABS_FLUX_RTOL}; "
        f"worst: {_format_worst(dev, _node_labels(solar_sample))}"
    )


@pytest.mark.parametrize("mh", [-4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.3, 0.5])
def test_ariadne_btsettl_band_flux_metallicity(grid, ariadne_nodes, mh):
    """Non-solar nodes of our grid match ARIADNE's BT-Settl within 1 % in the red/IR bands.

    40 nodes per [M/H] (seeded, Teff 3000-10000 K). Only bands whose agreement at
    [M/H] = 0 is ~0.5 % (z, y, 2MASS, WISE) are compared, so a failure here is about the
    spectra stored at these nodes, not about a passband. Tolerance 1 % (the issue's).
    """
    nodes = _sample(ariadne_nodes[ariadne_nodes.mh == mh], N_NODES_PER_MH, SEED + int(mh * 10))
    if nodes.empty:
        pytest.skip(f"no node with [M/H] = {mh} in both grids")
    bands = get_bands(METALLICITY_PROBE_BANDS)
    ours = _spectra(grid, nodes) @ band_flux_matrix(grid.wavelength.values, bands)
    dev = ours / nodes[list(METALLICITY_PROBE_BANDS)].to_numpy() - 1.0
    per_node = dev[np.arange(len(nodes)), np.argmax(np.abs(dev), axis=1)]
    worst = np.max(np.abs(per_node))
    assert worst <= ABS_FLUX_RTOL, (
        f"[M/H]={mh}: max |ours/ARIADNE - 1| = {worst:.3f} over {len(nodes)} nodes and "
        f"bands {', '.join(METALLICITY_PROBE_BANDS)}; "
        f"{np.mean(np.abs(per_node) > ABS_FLUX_RTOL):.0%} of nodes off; worst: "
        f"{_format_worst(per_node, _node_labels(nodes))}"
    )


# --------------------------------------------------------------------------------------
# 2./3. MIST bolometric corrections and extinction coefficients
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mist_nodes(grid):
    """(labels, Teff, logg, surface spectra [n_node, n_wave]) of the MIST comparison nodes."""
    labels, teffs, loggs, spectra = [], [], [], []
    for logg in MIST_LOGGS:
        for teff in MIST_TEFFS:
            node = grid.sel(teff=teff, logg=logg, mh=0.0)
            assert bool(node.valid), f"Teff={teff} logg={logg} is not a computed node"
            labels.append(f"Teff={teff:.0f} logg={logg:.1f}")
            teffs.append(teff)
            loggs.append(logg)
            spectra.append(10.0 ** node.log10_flux.values.astype(float))
    return labels, np.array(teffs), np.array(loggs), np.array(spectra)


def _mist_band_index(mist, band_id):
    return mist.bands.index(band_id)


@pytest.mark.parametrize("band_id", BAND_IDS)
def test_mist_extinction_ratio(grid, mist_nodes, band_id):
    """A_band/A_V of our pipeline (CCM89, R_V = 3.1, A_V = 1) within 3 % of MIST's.

    Ours: ``synthetic_magnitudes`` of our BT-Settl spectrum reddened by
    ``extinction_curve(law="CCM89")`` minus that of the unreddened one, at A_V = 1 mag.
    MIST: ``BC(A_V=0) - BC(A_V=1)`` at the same Teff/logg, [Fe/H] = 0 (the BC tables were
    computed by reddening ATLAS spectra with CCM89, R_V = 3.1). Tolerance 3 % (the
    issue's): the two sides use the same law and passbands of the same survey, and the
    spectral-shape dependence of A_band between ATLAS and BT-Settl is ≲ 1 % for broad
    bands. Bands beyond CCM89's 3.3 µm limit (WISE) cannot be reddened with this law by
    our ``extinction_curve`` and are skipped.
    """
    mist = load_mist_bc()
    labels, teffs, loggs, spectra = mist_nodes
    lam = grid.wavelength.values
    lo, hi = law_wavelength_range("CCM89")
    keep = (lam >= lo) & (lam <= hi)
    (band,) = get_bands([band_id])
    band_lo, band_hi = band.wavelength_range
    if band_lo < lam[keep][0] or band_hi > lam[keep][-1]:
        pytest.skip(f"{band_id} ({band_lo:.0f}-{band_hi:.0f} Å) lies outside CCM89's range")
    atten = 10.0 ** (-0.4 * MIST_AV * extinction_curve(lam[keep], rv=mist.rv, law="CCM89"))
    m0 = synthetic_magnitudes(lam[keep], spectra[:, keep], [band])[:, 0]
    m1 = synthetic_magnitudes(lam[keep], spectra[:, keep] * atten, [band])[:, 0]
    ours = (m1 - m0) / MIST_AV
    j = _mist_band_index(mist, band_id)
    theirs = np.array(
        [
            (mist.at(t, g, 0.0, 0.0)[j] - mist.at(t, g, 0.0, MIST_AV)[j]) / MIST_AV
            for t, g in zip(teffs, loggs, strict=True)
        ]
    )
    dev = ours / theirs - 1.0
    worst = np.max(np.abs(dev))
    assert worst <= A_RATIO_RTOL, (
        f"{band_id}: max |A/A_V ours / MIST - 1| = {worst:.4f} > {A_RATIO_RTOL}; worst: "
        f"{_format_worst(dev, labels)}"
    )


def _bolometric_corrections(lam, spectra, bands, fbol):
    """BC = m_bol - m_band of a star of radius R_sun at 10 pc with surface flux ``spectra``."""
    dilution = (R_SUN / (10.0 * PARSEC)) ** 2
    m_band = synthetic_magnitudes(lam, spectra * dilution, bands)
    m_bol = MIST_MBOL_SUN - 2.5 * np.log10(4.0 * np.pi * R_SUN**2 * fbol / L_SUN)
    return m_bol[:, None] - m_band


@pytest.mark.parametrize("band_id", BAND_IDS)
def test_mist_bolometric_correction(grid, mist_nodes, band_id):
    """BC_band of our pipeline within 0.03 mag of MIST's (A_V = 0, [Fe/H] = 0).

    BC = M_bol - M_band with M_bol,⊙ = 4.74 and L⊙ = 3.828e33 erg/s (IAU 2015 B2, MIST's
    convention). Ours: a star of radius R⊙ at 10 pc with our surface spectrum F_λ, m_bol
    from L = 4πR⊙²∫F_λ dλ (the radius cancels), m_band = ``synthetic_magnitudes`` in the
    band's own system (AB or Vega, as the survey publishes). MIST's BCs are in the same
    systems (GALEX/SDSS/PS1/SkyMapper AB; Gaia/2MASS/WISE Vega). Tolerance 0.03 mag (the
    issue's): MIST uses ATLAS/SYNTHE spectra, we use BT-Settl, which differ by a few
    hundredths in broad optical/IR bands for 4000-10000 K dwarfs.
    """
    mist = load_mist_bc()
    labels, teffs, loggs, spectra = mist_nodes
    lam = grid.wavelength.values
    fbol = np.trapezoid(spectra, lam, axis=-1)
    ours = _bolometric_corrections(lam, spectra, get_bands([band_id]), fbol)[:, 0]
    j = _mist_band_index(mist, band_id)
    theirs = np.array([mist.at(t, g, 0.0, 0.0)[j] for t, g in zip(teffs, loggs, strict=True)])
    dev = ours - theirs
    worst = np.max(np.abs(dev))
    assert worst <= BC_ATOL, (
        f"{band_id} ({mist.systems[j]}): max |BC ours - MIST| = {worst:.4f} mag > {BC_ATOL} "
        f"(mean {dev.mean():+.4f}); worst: {_format_worst(dev, labels)}"
    )


def test_bolometric_flux_matches_stefan_boltzmann(grid, mist_nodes):
    """∫F_λ dλ of our spectra over 913 Å-32 µm equals σT⁴ within 1 % (4000-10000 K dwarfs).

    The BC test takes the bolometric flux from the spectrum; the forward model takes the
    luminosity from the isochrones (L = 4πR²σT⁴). The two agree only if the spectra
    conserve flux. The truncated tails are computed, not assumed: the same trapezoid on a
    Planck spectrum sampled on our wavelength grid gives the fraction of σT⁴ the grid
    itself can hold (> 99.98 % here), and the model's deficit is measured against that.
    Tolerance 1 % = 0.011 mag in every BC, a third of the 0.03 mag BC budget.
    """
    labels, teffs, _, spectra = mist_nodes
    lam = grid.wavelength.values
    planck = 1.0 / (lam[None, :] ** 5 * np.expm1(H_C_OVER_K_AA / (lam[None, :] * teffs[:, None])))
    planck_norm = np.trapezoid(planck, lam, axis=-1) * (
        15.0 / np.pi**4 * (H_C_OVER_K_AA / teffs) ** 4
    )  # fraction of ∫B_λ dλ captured by the grid
    model = np.trapezoid(spectra, lam, axis=-1) / (SIGMA_SB * teffs**4)
    dev = model / planck_norm - 1.0
    assert np.all(planck_norm > 0.999), planck_norm
    worst = np.max(np.abs(dev))
    assert worst <= FLUX_CONSERVATION_RTOL, (
        f"max |∫F dλ / σT⁴ - 1| = {worst:.4f} > {FLUX_CONSERVATION_RTOL}; worst: "
        f"{_format_worst(dev, labels)}"
    )
