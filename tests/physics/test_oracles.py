"""External-oracle tests of ysoscale's synthetic photometry.

The oracles (see :mod:`tests.physics.oracles`) are computed by other groups from their own
copies of the model atmospheres and passbands:

* ARIADNE's pre-integrated BT-Settl band fluxes (Vines & Jenkins 2022): same model family
  as SEDFit's BT-Settl grid, so at the shared solar-metallicity nodes our spectra x our
  passbands x our integration must reproduce their absolute surface fluxes.
* MIST v1.2 bolometric corrections (Choi et al. 2016), from ATLAS12/SYNTHE spectra with
  CCM89 extinction: an independent check of our extinction coefficients A_band/A_V and of
  our bolometric corrections. The MIST comparisons use SEDFit's Kurucz/ATLAS9 grid, the
  atmospheres closest to MIST's (and the hot half of the default photometry grid).

The tests compare at exact grid nodes of both sides (no interpolation). Every tolerance is
the one the issue set (1 %, 3 %, 0.03 mag) and is never loosened: where a band misses it,
the test is marked ``xfail(strict=True)`` with the measured deviation and its reason, so
the xfail turns into a failure the moment the band starts to agree.
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
from ysoscale.physics.passbands import (
    BAND_IDS,
    ab_reference_flux,
    band_flux_matrix,
    get_bands,
    synthetic_magnitudes,
)
from ysoscale.physics.spectra import load_spectral_grid

SEED = 20251122
TEFF_RANGE = (3000.0, 10000.0)
N_SOLAR_NODES = 200

SIGMA_SB = 5.670374419e-5  # erg s-1 cm-2 K-4 (CODATA 2018)
L_SUN = 3.828e33  # erg s-1, IAU 2015 B3 nominal
R_SUN = 6.957e10  # cm, IAU 2015 B3 nominal
H_C_OVER_K_AA = 1.438776877e8  # hc/k in Å K
PARSEC = 3.0856775814913673e18  # cm

ABS_FLUX_RTOL = 0.01  # issue: band fluxes within 1 % of ARIADNE
A_RATIO_RTOL = 0.03  # issue: A_band/A_V within 3 % of MIST
BC_ATOL = 0.03  # issue: BCs within 0.03 mag of MIST
FLUX_CONSERVATION_RTOL = 0.01  # 1 % of sigma T^4 = 0.011 mag of BC (a third of BC_ATOL)

# MIST comparison nodes: [Fe/H] = 0, main-sequence gravities, 4000-10000 K. Kurucz and MIST
# both have a 250 K step here; SEDFit's BT-Settl has 100 K to 7000 K, then 200 K.
MIST_LOGGS = (4.0, 4.5)
MIST_TEFFS = {
    "kurucz": tuple(np.arange(4000.0, 10001.0, 250.0)),
    "btsettl": (4000.0, 4500.0, 5000.0, 5500.0, 6000.0, 6500.0, 7000.0, 8000.0, 9000.0, 10000.0),
}
MIST_AV = 1.0

# MIST's own Vega->AB offsets, mag(AB) = mag(Vega) + offset, from MIST v1.2's
# ``zeropoints.txt`` (column "mag(Vega/AB)"). The bc_tables.h5 of LACHESIS does not carry
# them; the numbers are copied from the public reproductions of that file in
# BolometricCorrections.jl (MIST module docstring: WISE_W1 2.665543) and in the
# ``ConvertMistMags`` post-processing module of M. J. Huston (2024), which lists the whole
# column. Not checked against the MIST web server itself (no network here).
MIST_VEGA_TO_AB = {
    "gaia_g": 0.128961,  # Gaia_G_EDR3
    "gaia_bp": 0.030233,  # Gaia_BP_EDR3
    "gaia_rp": 0.373349,  # Gaia_RP_EDR3
    "tmass_j": 0.889176,
    "tmass_h": 1.364157,
    "tmass_ks": 1.834505,
    "wise_w1": 2.665543,
    "wise_w2": 3.305247,
    "wise_w3": 5.139422,
    "wise_w4": 6.614602,
}

GAIA_DR2_CURVES = {"gaia_g": "GaiaDR2v2_G", "gaia_bp": "GaiaDR2v2_BP", "gaia_rp": "GaiaDR2v2_RP"}

# Bands in which SEDFit's BT-Settl fails the energy-check question of test 1c.
NONSOLAR_PROBE_BANDS = ("tmass_j", "tmass_h", "tmass_ks", "wise_w1", "wise_w2")
NONSOLAR_BROKEN_DEV = 0.10  # a node this far from ARIADNE is broken, not a model difference
NONSOLAR_FLAGGED_FRACTION = 0.90  # "almost all" broken nodes must fail the energy check


def _xfail(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


def _params(ids, xfails):
    return [
        pytest.param(band, marks=_xfail(xfails[band]), id=band) if band in xfails else band
        for band in ids
    ]


def _format_worst(dev, labels, k=5):
    order = np.argsort(-np.abs(dev))[:k]
    return "; ".join(f"{labels[i]}: {dev[i]:+.4f}" for i in order)


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def btsettl():
    """SEDFit's BT-Settl grid (ARIADNE's model family)."""
    return load_spectral_grid("btsettl")


@pytest.fixture(scope="module")
def kurucz():
    """SEDFit's Kurucz/ATLAS9 grid (closest to MIST's ATLAS12/SYNTHE atmospheres)."""
    return load_spectral_grid("kurucz")


@pytest.fixture(scope="module")
def ariadne_all_nodes(btsettl):
    """ARIADNE BT-Settl rows on nodes of our BT-Settl grid, with grid indices and ``valid``.

    ARIADNE's table holds 1452 rows on 617 nodes that occur two or three times with
    different values (all at logg 4.0/4.5, [Fe/H] -1.5..+0.5); those nodes are ambiguous
    and dropped. Restricted to ``TEFF_RANGE``; adds ``i_teff, i_logg, i_mh`` and our
    ``valid`` flag (False where SEDFit lacks the model or it fails the energy check).
    """
    table = load_ariadne_grid("BT_Settl")
    table = table.drop_duplicates(["teff", "logg", "mh"], keep=False)
    table = table[table.teff.between(*TEFF_RANGE)].reset_index(drop=True)
    index = {}
    for name in ("teff", "logg", "mh"):
        axis = btsettl[name].values
        pos = np.clip(np.searchsorted(axis, table[name].to_numpy()), 0, axis.size - 1)
        index[name] = np.where(np.isclose(axis[pos], table[name].to_numpy()), pos, -1)
    on_grid = (index["teff"] >= 0) & (index["logg"] >= 0) & (index["mh"] >= 0)
    table = table[on_grid].reset_index(drop=True)
    for name in index:
        table[f"i_{name}"] = index[name][on_grid]
    table["valid"] = btsettl.valid.values[table.i_teff, table.i_logg, table.i_mh]
    return table


@pytest.fixture(scope="module")
def solar_sample(ariadne_all_nodes):
    """200 valid [M/H] = 0 nodes (seeded sample, all gravities)."""
    table = ariadne_all_nodes[(ariadne_all_nodes.mh == 0.0) & ariadne_all_nodes.valid]
    table = table.reset_index(drop=True)
    rng = np.random.default_rng(SEED)
    take = rng.choice(len(table), size=min(N_SOLAR_NODES, len(table)), replace=False)
    return table.iloc[np.sort(take)].reset_index(drop=True)


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

ARIADNE_SOLAR_XFAIL: dict[str, str] = {  # measured on the seeded 200-node sample
    "galex_fuv": (
        "max |ours/ARIADNE-1| = 0.115 (median ratio 0.9992, worst at 3500-7000 K): SEDFit binned "
        "the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the native"
        " spectra; medians agree, individual nodes scatter"
    ),
    "galex_nuv": (
        "max |ours/ARIADNE-1| = 0.080 (median ratio 0.9965, worst at 3200-5300 K): SEDFit binned "
        "the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the native"
        " spectra; medians agree, individual nodes scatter"
    ),
    "sdss_u": (
        "max |ours/ARIADNE-1| = 0.026 (median ratio 0.9998, worst at 3600-5400 K): SEDFit binned "
        "the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the native"
        " spectra; medians agree, individual nodes scatter"
    ),
    "sdss_g": (
        "max |ours/ARIADNE-1| = 0.017 (median ratio 0.9993, worst at 3000-3500 K): SEDFit binned "
        "the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the native"
        " spectra; medians agree, individual nodes scatter"
    ),
    "sdss_r": (
        "max |ours/ARIADNE-1| = 0.0113 (median ratio 1.0001, worst at 3300 K logg 3.0): SEDFit "
        "binned the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the"
        " native spectra; medians agree, individual nodes scatter"
    ),
    "ps1_g": (
        "max |ours/ARIADNE-1| = 0.020 (median ratio 0.9992, worst at 3100-3600 K): SEDFit binned "
        "the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the native"
        " spectra; medians agree, individual nodes scatter"
    ),
    "ps1_r": (
        "max |ours/ARIADNE-1| = 0.0108 (median ratio 1.0000, worst at 3300 K logg 3.5): SEDFit "
        "binned the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the"
        " native spectra; medians agree, individual nodes scatter"
    ),
    "skymapper_u": (
        "max |ours/ARIADNE-1| = 0.033 (median ratio 0.9977, worst at 3000-5000 K): SEDFit binned "
        "the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the native"
        " spectra; medians agree, individual nodes scatter"
    ),
    "skymapper_v": (
        "max |ours/ARIADNE-1| = 0.026 (median ratio 1.0029, worst at 3000-5500 K): SEDFit binned "
        "the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the native"
        " spectra; medians agree, individual nodes scatter"
    ),
    "skymapper_g": (
        "max |ours/ARIADNE-1| = 0.016 (median ratio 0.9995, worst at 3100-3600 K): SEDFit binned "
        "the native BT-Settl spectra at R~145 by averaging samples, ARIADNE integrated the native"
        " spectra; medians agree, individual nodes scatter"
    ),
    "gaia_g": (
        "max |ours/ARIADNE-1| = 0.076 (median ratio 1.0041, worst at 3000 K logg 1.5): ARIADNE "
        "integrated the revised Gaia DR2 curves, ours are EDR3 (Riello et al. 2021)"
    ),
    "gaia_bp": (
        "max |ours/ARIADNE-1| = 0.028 (median ratio 1.0130, worst at 3300-3800 K): ARIADNE "
        "integrated the revised Gaia DR2 curves, ours are EDR3 (Riello et al. 2021)"
    ),
    "gaia_rp": (
        "max |ours/ARIADNE-1| = 0.017 (median ratio 0.9941, worst at 3000-3300 K): ARIADNE "
        "integrated the revised Gaia DR2 curves, ours are EDR3 (Riello et al. 2021)"
    ),
}


@pytest.mark.parametrize("band_id", _params(BAND_IDS, ARIADNE_SOLAR_XFAIL))
def test_ariadne_btsettl_band_flux_solar(btsettl, solar_sample, band_id):
    """Photon-weighted mean surface flux matches ARIADNE's BT-Settl value within 1 %.

    200 [M/H] = 0 nodes (seeded sample, Teff 3000-10000 K, all gravities) computed by both
    BT-Settl grids, SEDFit's raw spectra (no bolometric rescaling: ARIADNE integrated the
    spectra as published). ARIADNE's numbers are absolute surface fluxes (erg/s/cm²/µm,
    converted to per Å), the same photon-weighted mean our ``band_flux_matrix`` computes,
    so the comparison needs no normalisation and no zero point. Tolerance 1 % (the
    issue's).
    """
    (band,) = get_bands([band_id])
    lam = btsettl.wavelength.values
    ours = _spectra(btsettl, solar_sample) @ band_flux_matrix(lam, [band])[:, 0]
    ratio = ours / solar_sample[band_id].to_numpy()
    dev = ratio - 1.0
    worst = np.max(np.abs(dev))
    assert worst <= ABS_FLUX_RTOL, (
        f"{band_id}: max |ours/ARIADNE - 1| = {worst:.4f} > {ABS_FLUX_RTOL} over "
        f"{len(dev)} nodes (median ratio {np.median(ratio):.4f}); worst: "
        f"{_format_worst(dev, _node_labels(solar_sample))}"
    )


GAIA_DR2_XFAIL = {
    "gaia_bp": "max |ours/ARIADNE-1| = 0.0102 at 3400 K logg 3.0 (9 more M giants at "
    "0.008-0.0095): the same SEDFit-binning scatter of cool-star blue flux as sdss_g/ps1_g",
}


@pytest.mark.parametrize("band_id", _params(GAIA_DR2_CURVES, GAIA_DR2_XFAIL))
def test_ariadne_gaia_dr2_curves(btsettl, solar_sample, band_id):
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
    matrix = band_flux_matrix(btsettl.wavelength.values, [dr2])
    ours = _spectra(btsettl, solar_sample) @ matrix[:, 0]
    dev = ours / solar_sample[band_id].to_numpy() - 1.0
    worst = np.max(np.abs(dev))
    assert worst <= ABS_FLUX_RTOL, (
        f"{band_id} (DR2 curve): max |ours/ARIADNE - 1| = {worst:.4f} > {ABS_FLUX_RTOL}; "
        f"worst: {_format_worst(dev, _node_labels(solar_sample))}"
    )


NONSOLAR_XFAIL_REASON = (
    "measured: only 59.5 % of the 3260 non-solar nodes off ARIADNE by > 10 % in J/H/Ks/W1/W2 "
    "are valid=False (1320 pass the 0.9-1.11 x sigma T^4 energy check); 3155 of 3729 valid "
    "non-solar nodes disagree by > 1 % (6206 shared nodes). The energy check does not catch "
    "SEDFit's scrambled-metallicity spectra: use PHOENIX/Kurucz away from [M/H] = 0"
)


@pytest.mark.xfail(strict=True, reason=NONSOLAR_XFAIL_REASON)
def test_energy_check_flags_broken_nonsolar_btsettl(btsettl, ariadne_all_nodes):
    """The energy check marks SEDFit's broken non-solar BT-Settl nodes ``valid = False``.

    SEDFit 0.6.1's BT-Settl grid is broken at [M/H] != 0 (see ``ysoscale.physics.spectra``).
    ARIADNE's grid, integrated from the published BT-Settl spectra, is smooth there. A
    non-solar node whose 2MASS J/H/Ks or WISE W1/W2 flux is more than 10 % off ARIADNE's is
    a broken node (these bands agree to <= 0.9 % at [M/H] = 0, and 10 % is far beyond any
    model-version difference in the near-IR); at least 90 % of them must fail our energy
    check. The number of *valid* non-solar nodes that still disagree by > 1 % is reported
    in the assertion message.
    """
    nodes = ariadne_all_nodes[ariadne_all_nodes.mh != 0.0].reset_index(drop=True)
    bands = get_bands(NONSOLAR_PROBE_BANDS)
    ours = _spectra(btsettl, nodes) @ band_flux_matrix(btsettl.wavelength.values, bands)
    dev = np.max(np.abs(ours / nodes[list(NONSOLAR_PROBE_BANDS)].to_numpy() - 1.0), axis=1)
    valid = nodes.valid.to_numpy()
    broken = dev > NONSOLAR_BROKEN_DEV
    flagged = np.mean(~valid[broken])
    assert flagged >= NONSOLAR_FLAGGED_FRACTION, (
        f"only {flagged:.1%} of {broken.sum()} non-solar nodes off ARIADNE by > "
        f"{NONSOLAR_BROKEN_DEV:.0%} are valid=False ({np.sum(broken & valid)} still valid); "
        f"{np.sum(valid & (dev > ABS_FLUX_RTOL))} of {valid.sum()} valid non-solar nodes "
        f"disagree by > {ABS_FLUX_RTOL:.0%} (of {len(nodes)} shared nodes)"
    )


# --------------------------------------------------------------------------------------
# 2./3./4. MIST bolometric corrections, extinction coefficients, flux conservation
# --------------------------------------------------------------------------------------


def _mist_nodes(grid, library):
    """(labels, Teff, logg, surface spectra, bolometric_scale) at the MIST comparison nodes."""
    labels, teffs, loggs, spectra, scale = [], [], [], [], []
    for logg in MIST_LOGGS:
        for teff in MIST_TEFFS[library]:
            node = grid.sel(teff=teff, logg=logg, mh=0.0)
            assert bool(node.valid), f"{library} Teff={teff} logg={logg} is not a valid node"
            labels.append(f"Teff={teff:.0f} logg={logg:.1f}")
            teffs.append(teff)
            loggs.append(logg)
            spectra.append(10.0 ** node.log10_flux.values.astype(float))
            scale.append(float(node.bolometric_scale))
    return labels, np.array(teffs), np.array(loggs), np.array(spectra), np.array(scale)


@pytest.fixture(scope="module")
def mist_nodes(request):
    grids = {"kurucz": request.getfixturevalue("kurucz")}
    grids["btsettl"] = request.getfixturevalue("btsettl")
    return {name: (grid.wavelength.values, _mist_nodes(grid, name)) for name, grid in grids.items()}


def _mist_bc_at(mist, band_id, teffs, loggs, av):
    j = mist.bands.index(band_id)
    return np.array([mist.at(t, g, 0.0, av)[j] for t, g in zip(teffs, loggs, strict=True)])


SKYMAPPER_U_REASON = (
    "max {}, worst at 4000 K logg 4.0, falling to ~0.006 at 10000 K: our A_u grows for cool "
    "stars, so MIST's SkyMapper u curve passes redder light (red tail/leak) than pyphot's "
    "19-point 3000-3900 A curve: a passband difference, not extinction"
)
A_RATIO_XFAIL: dict[tuple[str, str], str] = {
    ("kurucz", "skymapper_u"): SKYMAPPER_U_REASON.format("0.187"),
    ("btsettl", "skymapper_u"): SKYMAPPER_U_REASON.format("0.195"),
}


def _a_ratio_params():
    params = []
    for library in ("kurucz", "btsettl"):
        for band in BAND_IDS:
            reason = A_RATIO_XFAIL.get((library, band))
            marks = [_xfail(reason)] if reason else []
            params.append(pytest.param(library, band, marks=marks, id=f"{library}-{band}"))
    return params


@pytest.mark.parametrize(("library", "band_id"), _a_ratio_params())
def test_mist_extinction_ratio(mist_nodes, library, band_id):
    """A_band/A_V of our pipeline (CCM89, R_V = 3.1, A_V = 1) within 3 % of MIST's.

    Ours: ``synthetic_magnitudes`` of a Kurucz (ATLAS9; and, as a second variant, BT-Settl)
    spectrum reddened by ``extinction_curve(law="CCM89")`` minus that of the unreddened one.
    MIST: ``BC(A_V=0) - BC(A_V=1)`` at the same Teff/logg, [Fe/H] = 0 (ATLAS12/SYNTHE
    spectra reddened with CCM89, R_V = 3.1). Tolerance 3 % (the issue's). Bands beyond
    CCM89's 3.3 µm limit (WISE) cannot be reddened with this law by our
    ``extinction_curve`` and are skipped.
    """
    mist = load_mist_bc()
    lam, (labels, teffs, loggs, spectra, _) = mist_nodes[library]
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
    theirs = (
        _mist_bc_at(mist, band_id, teffs, loggs, 0.0)
        - _mist_bc_at(mist, band_id, teffs, loggs, MIST_AV)
    ) / MIST_AV
    dev = ours / theirs - 1.0
    worst = np.max(np.abs(dev))
    assert worst <= A_RATIO_RTOL, (
        f"{library} {band_id}: max |A/A_V ours / MIST - 1| = {worst:.4f} > {A_RATIO_RTOL}; "
        f"worst: {_format_worst(dev, labels)}"
    )


BC_XFAIL: dict[str, str] = {  # measured at the 50 Kurucz nodes
    "galex_fuv": (
        "max |dBC| = 1.02 mag (mean -0.31, worst 4750-6500 K): ATLAS9 (ODF, GS98-era abundances) "
        "vs MIST's ATLAS12/SYNTHE line lists and abundances in the UV"
    ),
    "galex_nuv": (
        "max |dBC| = 0.69 mag (mean -0.13, worst 4250-4750 K): ATLAS9 (ODF, GS98-era abundances) "
        "vs MIST's ATLAS12/SYNTHE line lists and abundances in the UV"
    ),
    "sdss_u": (
        "max |dBC| = 0.179 mag (mean -0.056, worst 4250-4750 K): ATLAS9 (ODF, GS98-era "
        "abundances) vs MIST's ATLAS12/SYNTHE line lists and abundances (blue line blanketing)"
    ),
    "sdss_g": (
        "max |dBC| = 0.050 mag (mean -0.026, worst 4750-5250 K): ATLAS9 (ODF, GS98-era "
        "abundances) vs MIST's ATLAS12/SYNTHE line lists and abundances (blue line blanketing)"
    ),
    "sdss_i": (
        "max |dBC| = 0.095 mag (mean -0.011, worst 4000 K; <= 0.028 from 4500 K): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE"
    ),
    "sdss_z": (
        "max |dBC| = 0.038 mag (mean -0.004, worst 4000 K; <= 0.017 from 4250 K): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE"
    ),
    "ps1_g": (
        "max |dBC| = 0.049 mag (mean -0.024, worst 4500-5000 K): ATLAS9 (ODF, GS98-era "
        "abundances) vs MIST's ATLAS12/SYNTHE line lists and abundances (blue line blanketing)"
    ),
    "ps1_i": (
        "max |dBC| = 0.095 mag (mean -0.011, worst 4000 K; <= 0.028 from 4500 K): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE"
    ),
    "ps1_z": (
        "max |dBC| = 0.042 mag (mean -0.006, worst 4000 K; <= 0.020 from 4250 K): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE"
    ),
    "skymapper_u": (
        "max |dBC| = 0.41 mag (mean -0.091, worst 4000-4500 K): ATLAS9 (ODF, GS98-era abundances)"
        " vs MIST's ATLAS12/SYNTHE line lists and abundances, plus the u passband difference of "
        "the A_u test"
    ),
    "skymapper_v": (
        "max |dBC| = 0.136 mag (mean -0.056, worst 5000-5500 K): ATLAS9 (ODF, GS98-era "
        "abundances) vs MIST's ATLAS12/SYNTHE line lists and abundances (blue line blanketing)"
    ),
    "skymapper_g": (
        "max |dBC| = 0.043 mag (mean -0.020, worst 4500-5000 K): ATLAS9 (ODF, GS98-era "
        "abundances) vs MIST's ATLAS12/SYNTHE line lists and abundances (blue line blanketing)"
    ),
    "skymapper_i": (
        "max |dBC| = 0.091 mag (mean -0.011, worst 4000 K; <= 0.026 from 4500 K): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE"
    ),
    "skymapper_z": (
        "max |dBC| = 0.032 mag (mean -0.003, worst 4000 K; <= 0.015 from 4250 K): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE"
    ),
    "gaia_g": (
        "max |dBC| = 0.039 mag (mean -0.001, worst 4000 K; <= 0.026 from 4250 K): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE"
    ),
    "gaia_bp": (
        "max |dBC| = 0.035 mag (mean -0.008, worst 4250-4750 K): ATLAS9 (ODF, GS98-era "
        "abundances) vs MIST's ATLAS12/SYNTHE line lists and abundances (blue line blanketing)"
    ),
    "gaia_rp": (
        "max |dBC| = 0.049 mag (mean +0.008, worst 4000 K; <= 0.025 elsewhere): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE"
    ),
    "wise_w1": (
        "max |dBC| = 0.050 mag (mean +0.004, worst 4000 K; <= 0.018 elsewhere): cool-end "
        "(4000-4250 K) molecular (TiO) opacity of ATLAS9 vs ATLAS12/SYNTHE (CO/H2O)"
    ),
    "wise_w2": (
        "max |dBC| = 0.036 mag (mean -0.004, worst 4250-5000 K logg 4.0): ATLAS9 (ODF, GS98-era "
        "abundances) vs MIST's ATLAS12/SYNTHE line lists and abundances (CO fundamental band)"
    ),
    "wise_w3": (
        "max |dBC| = 0.075 mag (mean +0.013, worst 4000-4250 K): beyond 10 um SEDFit's Kurucz "
        "grid is a blackbody tail spliced onto ATLAS9 (its lambda factor restored at "
        "conversion), not a computed atmosphere; MIST's SYNTHE spectra carry the real IR"
    ),
    "wise_w4": (
        "max |dBC| = 0.110 mag (mean +0.051, worst 4000-4500 K): same cause as W3, larger at "
        "22 um where the spliced blackbody departs further from a model atmosphere"
    ),
}


@pytest.mark.parametrize("band_id", _params(BAND_IDS, BC_XFAIL))
def test_mist_bolometric_correction(mist_nodes, band_id):
    """BC_band from Kurucz spectra within 0.03 mag of MIST's (A_V = 0, [Fe/H] = 0), in AB.

    BC = M_bol - M_band with M_bol,⊙ = 4.74 and L⊙ = 3.828e33 erg/s (IAU 2015 B2, MIST's
    convention). Ours: a star of radius R⊙ with the Kurucz (ATLAS9) surface spectrum scaled
    by ``bolometric_scale`` (σT⁴/∫F dλ, within 0.1 % of 1 for these nodes), m_bol from
    L = 4πR⊙²σT⁴, m_band the AB magnitude (for Vega bands computed directly against the
    3631 Jy reference, ``ab_reference_flux`` through the band's own ``band_flux_matrix``).
    MIST's Vega BCs (Gaia, 2MASS, WISE) are put on AB with MIST's own Vega->AB offsets
    (:data:`MIST_VEGA_TO_AB`), so neither side's Vega convention enters: this compares
    physics (atmospheres, passbands, integration). Tolerance 0.03 mag (the issue's).
    """
    mist = load_mist_bc()
    lam, (labels, teffs, loggs, spectra, scale) = mist_nodes["kurucz"]
    (band,) = get_bands([band_id])
    matrix = band_flux_matrix(lam, [band])[:, 0]
    dilution = (R_SUN / (10.0 * PARSEC)) ** 2  # a star of radius R⊙ at 10 pc
    m_bol = MIST_MBOL_SUN - 2.5 * np.log10(4.0 * np.pi * R_SUN**2 * SIGMA_SB * teffs**4 / L_SUN)
    band_flux = dilution * (spectra * scale[:, None]) @ matrix
    m_band_ab = -2.5 * np.log10(band_flux / (ab_reference_flux(lam) @ matrix))
    ours = m_bol - m_band_ab
    theirs = _mist_bc_at(mist, band_id, teffs, loggs, 0.0)
    if band.system == "Vega":
        theirs = theirs - MIST_VEGA_TO_AB[band_id]  # m_AB = m_Vega + offset
    dev = ours - theirs
    worst = np.max(np.abs(dev))
    assert worst <= BC_ATOL, (
        f"{band_id} (AB): max |BC ours - MIST| = {worst:.4f} mag > {BC_ATOL} "
        f"(mean {dev.mean():+.4f}); worst: {_format_worst(dev, labels)}"
    )


SB_XFAIL = {
    "btsettl": "measured: integral/sigma T^4 = 0.969-1.000, worst -3.06 % at 4000 K logg 4.5, "
    "-2.4 % at 8000/10000 K logg 4.0: SEDFit's sample-averaging rebinning loses flux (the "
    "grid's bolometric_scale corrects it); Kurucz passes (0.9989-1.0005)",
}


@pytest.mark.parametrize("library", _params(("kurucz", "btsettl"), SB_XFAIL))
def test_bolometric_flux_matches_stefan_boltzmann(mist_nodes, library):
    """∫F_λ dλ of the raw spectra over the grid's range equals σT⁴ within 1 % (dwarfs).

    The forward model takes the luminosity from the isochrones (L = 4πR²σT⁴); the raw
    spectra are consistent with it only if they conserve flux. The truncated tails are
    computed, not assumed: the same trapezoid on a Planck spectrum sampled on the grid's
    wavelengths gives the fraction of σT⁴ the grid itself can hold (> 99.9 % here), and the
    model's deficit is measured against that. Tolerance 1 % = 0.011 mag in every BC.
    """
    lam, (labels, teffs, _, spectra, _) = mist_nodes[library]
    planck = 1.0 / (lam[None, :] ** 5 * np.expm1(H_C_OVER_K_AA / (lam[None, :] * teffs[:, None])))
    planck_norm = np.trapezoid(planck, lam, axis=-1) * (
        15.0 / np.pi**4 * (H_C_OVER_K_AA / teffs) ** 4
    )  # fraction of ∫B_λ dλ captured by the grid
    model = np.trapezoid(spectra, lam, axis=-1) / (SIGMA_SB * teffs**4)
    dev = model / planck_norm - 1.0
    assert np.all(planck_norm > 0.999), planck_norm
    worst = np.max(np.abs(dev))
    assert worst <= FLUX_CONSERVATION_RTOL, (
        f"{library}: max |∫F dλ / σT⁴ - 1| = {worst:.4f} > {FLUX_CONSERVATION_RTOL}; worst: "
        f"{_format_worst(dev, labels)}"
    )
