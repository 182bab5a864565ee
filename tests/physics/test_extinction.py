"""Extinction laws from dust-extinction."""

from __future__ import annotations

import numpy as np
import pytest

from ysoscale.physics.extinction import extinction_curve, law_wavelength_range


@pytest.mark.parametrize("law", ["G23", "F99", "CCM89"])
def test_normalised_at_v(law: str) -> None:
    """A(λ)/A(V) ≈ 1 at 5500 Å.

    3 %: each law normalises at its own definition of V (F99 through E(B-V) and a spline
    through optical knots gives 0.978 at 5500 Å; G23 and CCM89 give 0.999).
    """
    assert extinction_curve(np.array([5500.0]), 3.1, law)[0] == pytest.approx(1.0, abs=0.03)


def test_g23_covers_far_uv_to_w4_and_rises_to_the_blue() -> None:
    lam = np.geomspace(*law_wavelength_range("G23"), 200)
    curve = extinction_curve(lam, 3.1)
    assert np.all(curve > 0)
    assert curve[0] > 5 > 1 > curve[-1]


def test_higher_rv_is_greyer() -> None:
    lam = np.array([1500.0, 4400.0])
    steep, grey = extinction_curve(lam, 2.5), extinction_curve(lam, 5.5)
    assert np.all(grey < steep)


def test_out_of_range_is_refused_with_the_range() -> None:
    with pytest.raises(ValueError, match="1000-33333"):
        extinction_curve(np.array([34000.0]), 3.1, "CCM89")
    with pytest.raises(ValueError, match="R\\(V\\)"):
        extinction_curve(np.array([5500.0]), 6.5, "G23")
    with pytest.raises(ValueError, match="unknown extinction law"):
        extinction_curve(np.array([5500.0]), 3.1, "XX")
