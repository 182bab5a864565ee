"""ForwardModel: stellar parameters → magnitudes, batched, differentiable, in torch.

Two entry points:

* :meth:`ForwardModel.atmospheric` — (teff, logg, mh, av, rv, radius, distance) →
  magnitudes. Interpolates the photometry grid (:mod:`ysoscale.physics.photometry`):
  linearly in log10 Teff, log g, [M/H] and 1/R_V, and with cubic Hermite polynomials
  (value + exact slope) in A_V. Then ``m = m_surface − 5 log10(R/d)``.
* :meth:`ForwardModel.physical` — (log10_mass, log10_age, mh, distance, av, rv) →
  magnitudes and derived teff, logg, log10_lum, radius, through the isochrone grid
  (:mod:`ysoscale.physics.isochrones`), interpolated trilinearly.

An optional disk adds a blackbody of temperature ``disk_temp`` (K) whose luminosity is
``disk_frac`` × the star's, reddened by the same dust; ``disk_frac = 0`` returns the
bare star exactly.

Every input may be a torch tensor (autograd flows to all of them) or numpy / Python
numbers (numpy comes back). Each result carries ``valid``: the star lies inside every
grid axis, touches no isochrone node where the tracks are undefined, and its spectrum
was interpolated from computed (not hole-filled) models only; ``model_weight`` gives
the fraction of weight on computed models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import xarray as xr

from ysoscale.physics.spectra import STEFAN_BOLTZMANN_CGS

R_SUN_CM = 6.957e10  # IAU 2015 B3 nominal solar radius
PARSEC_CM = 3.0856775814913673e18
LOG10_R_SUN_OVER_PC = math.log10(R_SUN_CM / PARSEC_CM)
_POGSON = 2.5 / math.log(10.0)


@dataclass
class Photometry:
    """Result of a forward-model call (tensors, or numpy arrays for numpy input).

    Attributes
    ----------
    mag : (n_star, n_band) magnitudes in each band's own system
    valid : (n_star,) bool, see the module docstring
    model_weight : (n_star,) fraction of interpolation weight on computed models
    teff, logg, log10_lum, radius : (n_star,) derived parameters (``physical`` only)
    """

    mag: Any
    valid: Any
    model_weight: Any
    teff: Any = None
    logg: Any = None
    log10_lum: Any = None
    radius: Any = None

    def to_numpy(self) -> Photometry:
        """Same result with every tensor detached and converted to numpy."""
        values = {
            f.name: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return Photometry(**values)


def _locate(
    nodes: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left node index, fractional position in the cell, and whether x is inside."""
    inside = (x >= nodes[0]) & (x <= nodes[-1])
    clamped = torch.clamp(x, nodes[0], nodes[-1])
    index = torch.searchsorted(nodes, clamped.detach(), right=True) - 1
    index = index.clamp(0, nodes.numel() - 2)
    left = nodes[index]
    frac = (clamped - left) / (nodes[index + 1] - left)
    return index, frac, inside


def _cubic_cells(values: np.ndarray, slopes: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Per-cell cubic coefficients (c0..c3, in the cell's unit coordinate) along axis -2.

    ``values``/``slopes`` have shape (..., n_node, n_band); the result has shape
    (..., n_node - 1, 4 * n_band): the Hermite cubic through both ends of each cell.
    """
    h = np.diff(nodes)[:, None]
    m0, m1 = values[..., :-1, :], values[..., 1:, :]
    d0, d1 = slopes[..., :-1, :] * h, slopes[..., 1:, :] * h
    c2 = -3 * m0 - 2 * d0 + 3 * m1 - d1
    c3 = 2 * m0 + d0 - 2 * m1 + d1
    return np.concatenate([m0, d0, c2, c3], axis=-1)


def _stellar_table(
    mag: np.ndarray, dmag_dav: np.ndarray, valid: np.ndarray, av_nodes: np.ndarray, dtype: Any
) -> np.ndarray:
    """The stellar lookup table, shape (A_V cell, teff, logg, mh, rv, 4 * n_band + 1).

    ``mag``/``dmag_dav`` have dims (teff, logg, mh, rv, av, band) and ``valid`` (teff, logg,
    mh). Each row holds the cubic coefficients of every band in one A_V cell followed by
    the node's "computed model" indicator, so one gather serves both. The A_V cell is
    outermost: the 16 corners a star reads (Teff, log g, [M/H], R_V) then lie within a few
    hundred kB instead of megabytes, which halves the gather time. Filled one A_V cell at a
    time in float64 and stored in ``dtype``, so building it needs little beyond the table.
    """
    n_cell, n_band = len(av_nodes) - 1, mag.shape[-1]
    table = np.empty((n_cell, *mag.shape[:4], 4 * n_band + 1), dtype=dtype)
    for cell in range(n_cell):
        ends = slice(cell, cell + 2)
        table[cell, ..., :-1] = _cubic_cells(
            mag[..., ends, :].astype(np.float64),
            dmag_dav[..., ends, :].astype(np.float64),
            av_nodes[ends],
        )[..., 0, :]
    table[..., -1] = valid.astype(dtype)[None, :, :, :, None]
    return table


def _as_buffer(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """An owned, contiguous tensor (contiguity matters: gathers from a strided table are
    several times slower)."""
    return torch.as_tensor(np.array(values, dtype=np.float64, order="C"), dtype=dtype)


def _weighted_rows(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_k weights[:, k] · table[rows[:, k]] without materialising the gathered rows.

    ``embedding_bag`` fuses the gather and the weighted sum (about 4x faster than
    index_select + bmm on CPU) and is differentiable in ``weights``.
    """
    return torch.nn.functional.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")


def _corner_weights(*fracs: torch.Tensor) -> torch.Tensor:
    """Multilinear weights (n, 2**k) of k axes, first axis slowest."""
    weights = torch.ones_like(fracs[0])[:, None]
    for frac in fracs:
        pair = torch.stack([1 - frac, frac], dim=-1)
        weights = (weights[:, :, None] * pair[:, None, :]).reshape(frac.shape[0], -1)
    return weights


def _corner_offsets(strides: Sequence[int]) -> torch.Tensor:
    """Flat-index offsets of the 2**k corners, matching :func:`_corner_weights`."""
    offsets = torch.zeros(1, dtype=torch.long)
    for stride in strides:
        offsets = (offsets[:, None] + torch.tensor([0, stride])[None, :]).reshape(-1)
    return offsets


def _evaluate_cubic(coefficients: torch.Tensor, frac: torch.Tensor, n_band: int) -> torch.Tensor:
    c0, c1, c2, c3 = (coefficients[:, i * n_band : (i + 1) * n_band] for i in range(4))
    s = frac[:, None]
    return c0 + s * (c1 + s * (c2 + s * c3))


class ForwardModel(torch.nn.Module):
    """Batched, differentiable synthetic photometry.

    Parameters
    ----------
    photometry_grid : xarray.Dataset
        From :func:`ysoscale.physics.photometry.load_photometry_grid`.
    isochrone_grid : xarray.Dataset, optional
        From :func:`ysoscale.physics.isochrones.load_isochrone_grid`; needed for
        :meth:`physical`.
    bands : sequence of str, optional
        Subset (and order) of the grid's bands to predict; default all.
    dtype : torch.dtype
        float32 for throughput, float64 for gradient checks.
    chunk_size : int
        Stars interpolated at once; small chunks keep the gathered grid corners in
        the CPU cache (on a GPU a larger value is better).

    Examples
    --------
    >>> model = ForwardModel.default(bands=["gaia_g", "tmass_ks"])  # doctest: +SKIP
    >>> sun = model.atmospheric(teff=5772.0, logg=4.44, mh=0.0, av=0.0, rv=3.1,
    ...                         radius=1.0, distance=10.0)          # doctest: +SKIP
    >>> sun.mag.round(2)                                             # doctest: +SKIP
    array([[4.69, 3.27]])
    """

    def __init__(
        self,
        photometry_grid: xr.Dataset,
        isochrone_grid: xr.Dataset | None = None,
        bands: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float32,
        chunk_size: int = 2048,
    ) -> None:
        super().__init__()
        self.chunk_size = int(chunk_size)
        grid_bands = [str(b) for b in photometry_grid.band.values]
        self.bands = tuple(bands) if bands is not None else tuple(grid_bands)
        missing = [b for b in self.bands if b not in grid_bands]
        if missing:
            raise ValueError(f"bands {missing} are not in the photometry grid ({grid_bands})")
        columns = [grid_bands.index(b) for b in self.bands]
        grid = photometry_grid.isel(band=columns)

        def buffer(values: np.ndarray) -> torch.Tensor:
            return _as_buffer(values, dtype)

        self.register_buffer("log_teff_nodes", buffer(np.log10(grid.teff.values)))
        self.register_buffer("logg_nodes", buffer(grid.logg.values))
        self.register_buffer("mh_nodes", buffer(grid.mh.values))
        self.register_buffer("av_nodes", buffer(grid.av.values))
        self.register_buffer("inv_rv_nodes", buffer(-1.0 / grid.rv.values))  # increasing
        self.register_buffer("log_disk_temp_nodes", buffer(np.log10(grid.disk_temp.values)))
        av_nodes = grid.av.values.astype(np.float64)
        order = ("teff", "logg", "mh", "rv", "av", "band")
        table = _stellar_table(
            grid.mag.transpose(*order).values,
            grid.dmag_dav.transpose(*order).values,
            grid.valid.values,
            av_nodes,
            torch.empty((), dtype=dtype).numpy().dtype,
        )
        self._shape = table.shape[:5]
        self.register_buffer("table", torch.from_numpy(table.reshape(-1, table.shape[-1])))
        _, _, n_logg, n_mh, n_rv = self._shape
        self.register_buffer(
            "corner_offsets", _corner_offsets([n_logg * n_mh * n_rv, n_mh * n_rv, n_rv, 1])
        )
        disk_order = ("disk_temp", "rv", "av", "band")
        disk = _cubic_cells(
            grid.disk_mag.transpose(*disk_order).values.astype(np.float64),
            grid.disk_dmag_dav.transpose(*disk_order).values.astype(np.float64),
            av_nodes,
        )
        self._disk_shape = disk.shape[:3]
        self.register_buffer("disk_table", buffer(disk.reshape(-1, disk.shape[-1])))
        _, n_disk_rv, n_disk_cell = self._disk_shape
        self.register_buffer(
            "disk_corner_offsets", _corner_offsets([n_disk_rv * n_disk_cell, n_disk_cell])
        )
        self.isochrones = _IsochroneInterpolator(isochrone_grid, dtype) if isochrone_grid else None

    @classmethod
    def default(
        cls,
        bands: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        with_isochrones: bool = True,
        progress: bool = False,
    ) -> ForwardModel:
        """Forward model on the default cached grids, building them if needed."""
        from ysoscale.physics.photometry import load_photometry_grid

        grid, _ = load_photometry_grid(progress=progress)
        isochrones = None
        if with_isochrones:
            from ysoscale.physics.isochrones import load_isochrone_grid

            isochrones = load_isochrone_grid(progress=progress)
        return cls(grid, isochrones, bands=bands, dtype=dtype)

    # -- helpers ---------------------------------------------------------------------
    def _tensors(self, *values: Any) -> tuple[list[torch.Tensor], bool]:
        as_numpy = not any(isinstance(v, torch.Tensor) for v in values)
        dtype, device = self.table.dtype, self.table.device
        tensors = [torch.atleast_1d(torch.as_tensor(v, dtype=dtype, device=device)) for v in values]
        tensors = list(torch.broadcast_tensors(*tensors))
        return tensors, as_numpy

    def _interpolate_stellar(
        self,
        log_teff: torch.Tensor,
        logg: torch.Tensor,
        mh: torch.Tensor,
        av: torch.Tensor,
        rv: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, n_teff, n_logg, n_mh, n_rv = self._shape
        it, ft, ok_t = _locate(self.log_teff_nodes, log_teff)
        ig, fg, ok_g = _locate(self.logg_nodes, logg)
        im, fm, ok_m = _locate(self.mh_nodes, mh)
        ir, fr, ok_r = _locate(self.inv_rv_nodes, -1.0 / rv)
        ia, fa, ok_a = _locate(self.av_nodes, av)
        inside = ok_t & ok_g & ok_m & ok_r & ok_a
        base = (((ia * n_teff + it) * n_logg + ig) * n_mh + im) * n_rv + ir
        rows = base[:, None] + self.corner_offsets[None, :]
        combined = _weighted_rows(self.table, rows, _corner_weights(ft, fg, fm, fr))
        n_band = len(self.bands)
        return _evaluate_cubic(combined, fa, n_band), inside, combined[:, 4 * n_band]

    def _disk_magnitudes(
        self, disk_temp: torch.Tensor, av: torch.Tensor, rv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _, n_rv, n_cell = self._disk_shape
        ik, fk, ok_k = _locate(self.log_disk_temp_nodes, torch.log10(disk_temp))
        ir, fr, _ = _locate(self.inv_rv_nodes, -1.0 / rv)
        ia, fa, _ = _locate(self.av_nodes, av)
        rows = ((ik * n_rv + ir) * n_cell + ia)[:, None] + self.disk_corner_offsets[None, :]
        combined = _weighted_rows(self.disk_table, rows, _corner_weights(fk, fr))
        return _evaluate_cubic(combined, fa, len(self.bands)), ok_k

    # -- public API ------------------------------------------------------------------
    def atmospheric(
        self,
        teff: Any,
        logg: Any,
        mh: Any,
        av: Any,
        rv: Any,
        radius: Any,
        distance: Any,
        disk_frac: Any = None,
        disk_temp: Any = None,
    ) -> Photometry:
        """Magnitudes of stars given atmospheric parameters.

        Parameters
        ----------
        teff : K; logg : dex (cgs); mh : dex; av : mag; rv : R_V
        radius : R☉; distance : pc
        disk_frac : L_disk / L_star (optional, ≥ 0); disk_temp : K (needed with disk_frac)

        Returns
        -------
        Photometry
        """
        with_disk = disk_frac is not None
        values = [teff, logg, mh, av, rv, radius, distance]
        if with_disk:
            if disk_temp is None:
                raise ValueError("disk_temp is required when disk_frac is given")
            values += [disk_frac, disk_temp]
        tensors, as_numpy = self._tensors(*values)
        n_star = tensors[0].shape[0]
        if n_star > self.chunk_size:
            # small chunks keep the corner gathers in cache: several times faster
            chunks = [
                [t[start : start + self.chunk_size] for t in tensors]
                for start in range(0, n_star, self.chunk_size)
            ]
            parts = self._map_chunks(chunks)
            result = Photometry(
                *(
                    torch.cat([getattr(p, name) for p in parts])
                    for name in ("mag", "valid", "model_weight")
                )
            )
        else:
            result = self._atmospheric_tensors(*tensors)
        return result.to_numpy() if as_numpy else result

    def _map_chunks(self, chunks: list[list[torch.Tensor]]) -> list[Photometry]:
        """Run chunks on torch's thread count: each chunk is too small for torch's own
        intra-op parallelism, so without autograd whole chunks go to a thread pool."""
        threads = torch.get_num_threads()
        tracked = torch.is_grad_enabled() and any(t.requires_grad for t in chunks[0])
        if threads == 1 or tracked or self.table.device.type != "cpu":
            return [self._atmospheric_tensors(*chunk) for chunk in chunks]
        from concurrent.futures import ThreadPoolExecutor

        torch.set_num_threads(1)  # one chunk per thread, no nested intra-op threads
        try:
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(lambda chunk: self._atmospheric_tensors(*chunk), chunks))
        finally:
            torch.set_num_threads(threads)

    def _atmospheric_tensors(self, *tensors: torch.Tensor) -> Photometry:
        with_disk = len(tensors) > 7
        teff_t, logg_t, mh_t, av_t, rv_t, radius_t, distance_t = tensors[:7]
        log_teff = torch.log10(teff_t)
        surface, inside, model_weight = self._interpolate_stellar(
            log_teff, logg_t, mh_t, av_t, rv_t
        )
        log_r_over_d = torch.log10(radius_t) - torch.log10(distance_t) + LOG10_R_SUN_OVER_PC
        mag = surface - 5.0 * log_r_over_d[:, None]
        valid = inside & (model_weight > 1 - 1e-6) & (radius_t > 0) & (distance_t > 0)
        if with_disk:
            frac, temp = tensors[7], tensors[8]
            valid = valid & (frac >= 0)
            rows = torch.nonzero(frac > 0).squeeze(1)  # only stars with a disk pay for it
            if rows.numel():
                disk_unit, ok_temp = self._disk_magnitudes(temp[rows], av_t[rows], rv_t[rows])
                # disk bolometric flux at Earth = frac * sigma T^4 (R/d)^2, in erg/s/cm^2
                log_flux = (
                    torch.log10(frac[rows])
                    + math.log10(STEFAN_BOLTZMANN_CGS)
                    + 4.0 * log_teff[rows]
                    + 2.0 * log_r_over_d[rows]
                )
                disk_mag = disk_unit - 2.5 * log_flux[:, None]
                star_mag = mag[rows]
                combined = -_POGSON * torch.logaddexp(star_mag / -_POGSON, disk_mag / -_POGSON)
                mag = mag.index_copy(0, rows, combined)
                valid = valid.index_copy(0, rows, valid[rows] & ok_temp)
        return Photometry(mag=mag, valid=valid, model_weight=model_weight)

    def physical(
        self,
        log10_mass: Any,
        log10_age: Any,
        mh: Any,
        distance: Any,
        av: Any,
        rv: Any,
        disk_frac: Any = None,
        disk_temp: Any = None,
    ) -> Photometry:
        """Magnitudes and derived parameters of stars given mass, age and composition.

        Parameters
        ----------
        log10_mass : log10(M / M☉); log10_age : log10(age / yr); mh : dex
        distance : pc; av : mag; rv : R_V; disk_frac, disk_temp : as in :meth:`atmospheric`
        """
        if self.isochrones is None:
            raise ValueError("this ForwardModel was built without an isochrone grid")
        tensors, as_numpy = self._tensors(log10_mass, log10_age, mh, distance, av, rv)
        mass_t, age_t, mh_t, distance_t, av_t, rv_t = tensors
        derived, iso_ok = self.isochrones(mass_t, age_t, mh_t)
        teff = 10.0 ** derived["log10_teff"]
        radius = 10.0 ** derived["log10_radius"]
        # atmospheres only for stars the isochrones define; the others stay NaN / invalid
        rows = torch.nonzero(iso_ok).squeeze(1)
        disk = ()
        if disk_frac is not None:
            disk = tuple(self._tensors(disk_frac, disk_temp, mass_t)[0][:2])
        inputs = [teff, derived["logg"], mh_t, av_t, rv_t, radius, distance_t, *disk]
        photometry = self.atmospheric(*(t[rows] for t in inputs))
        n_star = mass_t.shape[0]
        mag = torch.full((n_star, len(self.bands)), torch.nan, dtype=teff.dtype, device=teff.device)
        mag = mag.index_copy(0, rows, photometry.mag)
        valid = torch.zeros_like(iso_ok).index_copy(0, rows, photometry.valid)
        weight = torch.zeros_like(teff).index_copy(0, rows, photometry.model_weight)
        result = Photometry(
            mag=mag,
            valid=valid,
            model_weight=weight,
            teff=teff,
            logg=derived["logg"],
            log10_lum=derived["log10_lum"],
            radius=radius,
        )
        return result.to_numpy() if as_numpy else result

    def forward(
        self,
        teff: torch.Tensor,
        logg: torch.Tensor,
        mh: torch.Tensor,
        av: torch.Tensor,
        rv: torch.Tensor,
        radius: torch.Tensor,
        distance: torch.Tensor,
    ) -> torch.Tensor:
        """Magnitudes (n_star, n_band) of :meth:`atmospheric`, for use as a module."""
        return self.atmospheric(teff, logg, mh, av, rv, radius, distance).mag


_POSTMS_PREFIX = "postms_"
_MASS_BELOW, _MASS_ABOVE = -10.0, 10.0  # log10 mass stand-ins for unreachable phases


def _postms_mass_table(mass: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Post-MS log mass curves ``(n_curve, n_phase)`` with invalid nodes filled so that
    every curve stays non-decreasing: -10 before its first valid node, +10 after its last
    (the valid nodes of a curve are contiguous, checked when the grid is built)."""
    after_first = np.maximum.accumulate(valid, axis=-1)
    before_last = np.maximum.accumulate(valid[..., ::-1], axis=-1)[..., ::-1]
    filled = np.where(valid, mass, np.where(after_first, _MASS_ABOVE, _MASS_BELOW))
    filled = np.where(before_last | valid, filled, _MASS_ABOVE)
    return np.maximum.accumulate(filled, axis=-1)


class _IsochroneInterpolator(torch.nn.Module):
    """Isochrone lookup: (log10_mass, log10_age, mh) -> log Teff, log g, log L, log R.

    Main sequence (and PMS): trilinear interpolation of the regular grid. Where that is
    not valid (past the TAMS, or in the last cell below it) and the grid carries the
    post-MS tables (``postms_*``, dims (log10_age, mh, phase)), the star is looked up
    along the isochrone instead: the four (age, mh) corner curves of log mass(phase) are
    interpolated bilinearly, the phase at which that curve reaches the star's mass is
    found by ``searchsorted`` and linear inversion inside the bracketing phase segment,
    and the four quantities are interpolated bilinearly in (age, mh) and linearly in
    phase there. Every step is linear in the inputs within a cell, so autograd flows to
    mass, age and mh. Valid only where the bracketing phase nodes of every corner with
    nonzero weight are valid; a mass beyond the curve (more massive than any star alive
    at that age) is invalid.
    """

    variables = ("log10_teff", "logg", "log10_lum", "log10_radius")
    postms_chunk = 4096  # stars per post-MS chunk: each holds 4 x n_phase corner masses

    def __init__(self, grid: xr.Dataset, dtype: torch.dtype) -> None:
        super().__init__()
        ms_grid = grid[[*self.variables, "valid"]].transpose("log10_mass", "log10_age", "mh")
        self.register_buffer("mass_nodes", _as_buffer(ms_grid.log10_mass.values, dtype))
        self.register_buffer("age_nodes", _as_buffer(ms_grid.log10_age.values, dtype))
        self.register_buffer("mh_nodes", _as_buffer(ms_grid.mh.values, dtype))
        stacked = np.stack([ms_grid[v].values for v in self.variables], axis=-1)
        stacked = stacked.astype(np.float64)
        valid = ms_grid.valid.values.astype(bool) & np.isfinite(stacked).all(axis=-1)
        stacked[~valid] = 0.0
        self._shape = valid.shape
        # last column: the node's validity, so one fused gather also checks the corners
        with_valid = np.concatenate([stacked, valid[..., None].astype(np.float64)], axis=-1)
        self.register_buffer(
            "table", _as_buffer(with_valid.reshape(-1, with_valid.shape[-1]), dtype)
        )
        n_age, n_mh = valid.shape[1:]
        self.register_buffer("corner_offsets", _corner_offsets([n_age * n_mh, n_mh, 1]))
        self.has_postms = _POSTMS_PREFIX + "log10_mass" in grid
        if self.has_postms:
            names = [_POSTMS_PREFIX + v for v in ("log10_mass", *self.variables)]
            post = grid[[*names, _POSTMS_PREFIX + "valid"]].transpose("log10_age", "mh", "phase")
            if not np.allclose(post.log10_age.values, ms_grid.log10_age.values) or not np.allclose(
                post.mh.values, ms_grid.mh.values
            ):
                raise ValueError("post-MS tables must share the grid's age and mh axes")
            values = np.stack([post[v].values for v in names], axis=-1).astype(np.float64)
            ok = post[_POSTMS_PREFIX + "valid"].values.astype(bool)
            ok &= np.isfinite(values).all(axis=-1)
            n_phase = ok.shape[-1]
            self._n_phase = n_phase
            mass = _postms_mass_table(values[..., 0], ok)
            quantities = np.where(ok[..., None], values[..., 1:], 0.0)
            self.register_buffer("postms_mass", _as_buffer(mass.reshape(-1, n_phase), dtype))
            self.register_buffer(
                "postms_table", _as_buffer(quantities.reshape(-1, len(self.variables)), dtype)
            )
            self.register_buffer("postms_valid", torch.from_numpy(ok.reshape(-1).copy()))

    def _main_sequence(
        self, log10_mass: torch.Tensor, log10_age: torch.Tensor, mh: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _, n_age, n_mh = self._shape
        i, fi, ok_i = _locate(self.mass_nodes, log10_mass)
        j, fj, ok_j = _locate(self.age_nodes, log10_age)
        k, fk, ok_k = _locate(self.mh_nodes, mh)
        rows = ((i * n_age + j) * n_mh + k)[:, None] + self.corner_offsets[None, :]
        combined = _weighted_rows(self.table, rows, _corner_weights(fi, fj, fk))
        n_var = len(self.variables)
        # valid only if every corner with weight is valid: the weights sum to one
        ok = ok_i & ok_j & ok_k & (combined[:, n_var] > 1 - 1e-6)
        out = combined[:, :n_var]
        return out, ok

    def _post_main_sequence(
        self, log10_mass: torch.Tensor, log10_age: torch.Tensor, mh: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lookup along the post-MS isochrone for one chunk of stars."""
        n_mh, n_phase = self.mh_nodes.numel(), self._n_phase
        j, fj, ok_j = _locate(self.age_nodes, log10_age)
        k, fk, ok_k = _locate(self.mh_nodes, mh)
        corners = [
            ((j + dj) * n_mh + k + dk, wj * wk)
            for dj, wj in ((0, 1 - fj), (1, fj))
            for dk, wk in ((0, 1 - fk), (1, fk))
        ]
        curve = _weighted_rows(
            self.postms_mass,
            torch.stack([row for row, _ in corners], dim=1),
            torch.stack([w for _, w in corners], dim=1),
        )
        target = log10_mass[:, None]
        hi = torch.searchsorted(
            curve.detach().contiguous(), target.detach().contiguous(), right=True
        )
        hi = hi[:, 0]
        inside = (hi > 0) & (hi < n_phase)
        lo = (hi - 1).clamp(0, n_phase - 2)
        m_lo = curve.gather(1, lo[:, None])[:, 0]
        m_hi = curve.gather(1, lo[:, None] + 1)[:, 0]
        width = m_hi - m_lo
        safe = width > 0
        t = (log10_mass - m_lo) / torch.where(safe, width, torch.ones_like(width))
        t = torch.where(safe & inside, t, torch.zeros_like(t)).clamp(0.0, 1.0)
        out = torch.zeros(
            log10_mass.shape[0],
            len(self.variables),
            dtype=self.postms_table.dtype,
            device=self.postms_table.device,
        )
        ok = inside & safe & ok_j & ok_k
        for row, w in corners:
            for dp, wp in ((0, 1 - t), (1, t)):
                flat = row * n_phase + lo + dp
                out = out + (w * wp)[:, None] * self.postms_table[flat]
                ok = ok & (self.postms_valid[flat] | (w == 0))
        return out, ok

    def forward(
        self, log10_mass: torch.Tensor, log10_age: torch.Tensor, mh: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        out, ok = self._main_sequence(log10_mass, log10_age, mh)
        if self.has_postms:
            need = torch.nonzero(~ok)[:, 0]
            if need.numel():
                parts = [
                    self._post_main_sequence(log10_mass[idx], log10_age[idx], mh[idx])
                    for idx in need.split(self.postms_chunk)
                ]
                post = torch.cat([p[0] for p in parts])
                post_ok = torch.cat([p[1] for p in parts])
                out = out.index_copy(0, need, post)
                ok = ok.index_copy(0, need, post_ok)
        return {name: out[:, n] for n, name in enumerate(self.variables)}, ok
