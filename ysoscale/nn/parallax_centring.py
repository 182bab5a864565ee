"""Per-star distance coordinate centred on the parallax (``distance_coordinate = "parallax"``).

The flow of :class:`~ysoscale.nn.npe.PosteriorEstimator` lives in the logit space ``u`` of
the parameter box. For the distance parameter that space spans the whole prior range
(``log10_distance`` 0.5–4.5) with a spread of order one, while a Gaia parallax at S/N 100
fixes the distance to 0.004 dex. A spline flow then has to build a peak about a hundredth
of its natural width; trained for a bounded time it leaves the posterior too wide (the
distance coverage of the shipped model is 0.12–0.36 too high at parallax S/N > 5).

This module gives the flow a coordinate in which that peak has unit width. For the distance
parameter (``log10_distance`` or ``distance_modulus``) and a star with parallax
``ϖ ± σ`` (mas), S/N ``r = ϖ / σ``:

* ``x_ϖ`` = the distance implied by the parallax, ``log10(1000 / ϖ)`` (or ``5 x - 5``),
  moved inside the box; ``s_x = a / (r ln 10)`` its first-order width (``a`` = 1 or 5);
* in the logit space, ``u_ϖ = logit((x_ϖ - lo) / (hi - lo))`` and
  ``s_u = k s_x / ((hi - lo) p (1 - p))``, with ``k`` = :data:`FRAME_INFLATION` = 3;
* a precision-weighted mean of ``u_ϖ`` with the native frame (centre 0, width 1):
  ``λ = w(r) / s_u²``, ``centre = λ u_ϖ / (1 + λ)``, ``width = 1 / sqrt(1 + λ)``, with
  ``w(r)`` rising smoothly from 0 at ``r <= 1`` to 1 at ``r >= 3``.

The flow models ``v = (u - centre) / width``. Why ``k = 3``: zuko's spline transforms act
on ``[-5, 5]`` and are the identity outside, so the flow can put its mass only within about
five frame widths of the centre. With ``k = 3`` that window is ±15 first-order widths, which
holds the skewed far-side tail of a parallax at S/N 3 (``1 / ϖ`` reaches twice the distance
at 1.5 σ); at high S/N the posterior is a peak of width ``1 / k`` in ``v``, easy for a
spline. The map is affine in ``θ`` for a given star,
so the posterior density only gains the exact Jacobian ``-log width``; stars without a
parallax (or with ``r <= 1``) see the native frame unchanged. Other parameters are never
touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Transform, constraints

DISTANCE_PARAMS: dict[str, tuple[float, float]] = {
    "log10_distance": (1.0, 0.0),
    "distance_modulus": (5.0, -5.0),
}
"""``{parameter: (a, b)}``: the parameter is ``a log10(d / pc) + b``."""

SNR_NO_INFORMATION = 1.0
"""Parallax S/N at and below which the native frame is used unchanged."""
SNR_FULL_WEIGHT = 3.0
"""Parallax S/N from which the parallax precision enters with full weight."""
FRAME_INFLATION = 3.0
"""Frame width in units of the parallax's first-order distance width (see above)."""
MIN_WIDTH = 1e-4
"""Smallest frame width (logit units, ~1e-4 dex): S/N ~ 1e4, Gaia's best. A reported
parallax error of, say, 1e-30 mas would otherwise overflow the precision in float32."""
EDGE_MARGIN = 1e-3
"""Fraction of the box kept between the parallax distance and the box's edges."""


def _snr_weight(snr: Tensor) -> Tensor:
    """Smoothstep from 0 at ``SNR_NO_INFORMATION`` to 1 at ``SNR_FULL_WEIGHT``."""
    t = ((snr - SNR_NO_INFORMATION) / (SNR_FULL_WEIGHT - SNR_NO_INFORMATION)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def parallax_frame(
    params: tuple[str, ...],
    lo: Tensor,
    hi: Tensor,
    parallax: Tensor | None,
    parallax_error: Tensor | None,
    batch: int,
) -> tuple[Tensor, Tensor]:
    """Centre and width ``(batch, n_param)`` of every star's flow coordinate (logit space).

    Parameters
    ----------
    params : tuple of str
        The estimator's parameters; the one in :data:`DISTANCE_PARAMS` (if any) is centred.
    lo, hi : Tensor, shape (n_param,)
        The parameter box.
    parallax, parallax_error : Tensor, shape (batch,), or None
        In mas; NaN, a non-positive error or None mark a missing parallax.
    batch : int
        Number of stars.

    Returns
    -------
    centre, width : Tensor, shape (batch, n_param)
        0 and 1 for every parameter but the distance, and for stars without a usable
        parallax.

    Examples
    --------
    >>> lo, hi = torch.tensor([0.5]), torch.tensor([4.5])
    >>> centre, width = parallax_frame(("log10_distance",), lo, hi,
    ...                                torch.tensor([10.0, float("nan")]),
    ...                                torch.tensor([0.1, 0.1]), 2)
    >>> p = (2.0 - 0.5) / 4.0   # 10 mas: log10 d = 2
    >>> round(float(centre[0, 0]), 3), round(math.log(p / (1 - p)), 3)
    (-0.511, -0.511)
    >>> round(float(width[0, 0]) * 4.0 * p * (1 - p) * 100 * math.log(10), 2)   # = k s_x r ln 10
    3.0
    >>> centre[1].tolist(), width[1].tolist()
    ([0.0], [1.0])
    """

    def logit_frame(index: int, x_plx: Tensor, s_x: Tensor) -> tuple[Tensor, Tensor]:
        scale = hi[index] - lo[index]
        p = (x_plx - lo[index]) / scale
        return torch.logit(p), FRAME_INFLATION * s_x / (scale * p * (1.0 - p))

    return _distance_frame(params, lo, hi, parallax, parallax_error, batch, logit_frame)


def _distance_frame(
    params: tuple[str, ...],
    lo: Tensor,
    hi: Tensor,
    parallax: Tensor | None,
    parallax_error: Tensor | None,
    batch: int,
    place: Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]],
) -> tuple[Tensor, Tensor]:
    """The identity frame ``(batch, n_param)`` but in the distance column: there the
    parallax distance and its width (:func:`parallax_distance`), put into the estimator's
    coordinate by ``place(index, x_plx, s_x) -> (centre, width)``, blended with the native
    frame (:func:`blend_with_native`). Shared by :func:`parallax_frame` and
    :func:`token_frame`, which differ only in ``place``."""
    centre = lo.new_zeros(batch, lo.shape[0])
    width = lo.new_ones(batch, lo.shape[0])
    implied = parallax_distance(params, lo, hi, parallax, parallax_error)
    if implied is None:
        return centre, width
    index, x_plx, s_x, weight = implied
    centre[:, index], width[:, index] = blend_with_native(*place(index, x_plx, s_x), weight)
    return centre, width


def parallax_distance(
    params: tuple[str, ...],
    lo: Tensor,
    hi: Tensor,
    parallax: Tensor | None,
    parallax_error: Tensor | None,
) -> tuple[int, Tensor, Tensor, Tensor] | None:
    """The distance a parallax implies, its first-order width and the weight it deserves.

    Returns
    -------
    None
        If ``params`` has no distance parameter or there is no parallax.
    index : int
        Position of the distance parameter in ``params``.
    x_plx : Tensor, shape (batch,)
        ``a log10(1000 / ϖ) + b``, kept :data:`EDGE_MARGIN` of the box inside ``[lo, hi]``.
    s_x : Tensor, shape (batch,)
        ``a / (r ln 10)``, its width at S/N ``r``.
    weight : Tensor, shape (batch,)
        ``w(r)``: 0 for stars without a usable parallax (``x_plx``, ``s_x`` are then
        placeholders), 1 from S/N :data:`SNR_FULL_WEIGHT`.

    Examples
    --------
    >>> index, x, s, w = parallax_distance(("log10_distance",), torch.tensor([0.5]),
    ...     torch.tensor([4.5]), torch.tensor([10.0, 1.0]), torch.tensor([0.1, 1.0]))
    >>> index, x.tolist(), round(float(s[0]), 5), w.tolist()
    (0, [2.0, 3.0], 0.00434, [1.0, 0.0])
    """
    found = [i for i, name in enumerate(params) if name in DISTANCE_PARAMS]
    if not found or parallax is None or parallax_error is None:
        return None
    (index,) = found
    a, b = DISTANCE_PARAMS[params[index]]
    usable = torch.isfinite(parallax) & torch.isfinite(parallax_error) & (parallax_error > 0)
    safe_err = torch.where(usable, parallax_error, torch.ones_like(parallax_error))
    snr = torch.where(usable, parallax / safe_err, torch.zeros_like(parallax))
    weight = _snr_weight(snr)
    informative = weight > 0
    safe_plx = torch.where(informative, parallax, torch.ones_like(parallax))
    safe_snr = torch.where(informative, snr, torch.ones_like(snr))
    box_lo, box_hi = lo[index], hi[index]
    margin = EDGE_MARGIN * (box_hi - box_lo)
    x_plx = a * torch.log10(1000.0 / safe_plx) + b
    x_plx = torch.minimum(torch.maximum(x_plx, box_lo + margin), box_hi - margin)
    return index, x_plx, a / (safe_snr * math.log(10.0)), weight


def blend_with_native(
    centre_plx: Tensor, width_plx: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor]:
    """Precision-weighted mean of the parallax frame ``(centre_plx, width_plx)`` with the
    native frame (centre 0, width 1): ``λ = weight / width_plx²``, ``centre = λ centre_plx /
    (1 + λ)``, ``width = 1 / sqrt(1 + λ)``; ``weight`` 0 gives the native frame.

    Examples
    --------
    >>> c, w = blend_with_native(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0]),
    ...                          torch.tensor([1.0, 0.0]))
    >>> c.tolist(), [round(v, 4) for v in w.tolist()]
    ([1.0, 0.0], [0.7071, 1.0])
    """
    width_plx = width_plx.clamp(min=MIN_WIDTH)
    precision = torch.where(weight > 0, weight / width_plx**2, torch.zeros_like(width_plx))
    return precision * centre_plx / (1.0 + precision), torch.rsqrt(1.0 + precision)


def token_frame(
    params: tuple[str, ...],
    loc: Tensor,
    scale: Tensor,
    lo: Tensor,
    hi: Tensor,
    parallax: Tensor | None,
    parallax_error: Tensor | None,
    batch: int,
    inflation: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Centre and width ``(batch, n_param)`` of each star's distance frame in a token space
    ``(θ - loc) / scale`` (the simformer's), as :func:`parallax_frame` does in the logit
    space: the parallax distance with width ``inflation · s_x / scale``, blended with the
    native frame. A flow-matching model starts from unit-variance noise in every token, so
    ``inflation`` 1 (a high-S/N posterior of about unit width) gives the straightest paths;
    it has no spline window to respect.

    Examples
    --------
    >>> centre, width = token_frame(("log10_distance",), torch.tensor([2.5]),
    ...     torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([4.5]),
    ...     torch.tensor([10.0]), torch.tensor([0.1]), 1)
    >>> round(float(centre[0, 0]), 3), round(float(width[0, 0]), 4)   # (2 - 2.5) / 0.5; s_x / 0.5
    (-1.0, 0.0087)
    """

    def standardised_frame(index: int, x_plx: Tensor, s_x: Tensor) -> tuple[Tensor, Tensor]:
        return (x_plx - loc[index]) / scale[index], inflation * s_x / scale[index]

    return _distance_frame(params, lo, hi, parallax, parallax_error, batch, standardised_frame)


class ParallaxCentring(Transform):
    """Elementwise map ``u -> (u - centre) / width`` from the logit box to the flow's space.

    ``centre`` and ``width`` are ``(batch, n_param)`` (:func:`parallax_frame`) and broadcast
    over leading sample dimensions; unlike torch's ``AffineTransform`` the event shape is
    left as it is.
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, centre: Tensor, width: Tensor) -> None:
        super().__init__()
        self.centre = centre
        self.width = width

    def _call(self, u: Tensor) -> Tensor:
        return (u - self.centre) / self.width

    def _inverse(self, v: Tensor) -> Tensor:
        return self.centre + self.width * v

    def log_abs_det_jacobian(self, u: Tensor, v: Tensor) -> Tensor:
        return (-torch.log(self.width)).expand_as(u)
