"""Models loaded once per worker process, onto the worker's device.

:class:`ModelPlugin` is registered with the cluster before any inference task is
submitted; Dask runs its ``setup`` on every worker, including the ones that replace a
lost worker. Tasks then fetch the loaded models with :func:`worker_models` instead of
receiving weights through the task graph. Outside a Dask worker (``workers=0``) the same
call loads the models once per process.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from distributed import WorkerPlugin

from ysoscale.infer.kernel import SampleWeighting
from ysoscale.nn.npe import PosteriorEstimator
from ysoscale.nn.recalibration import QuantileRecalibration
from ysoscale.nn.simformer import Simformer, load_estimator
from ysoscale.physics.forward import ForwardModel


@dataclass(frozen=True)
class LoadedModels:
    """The estimator, (for the physical parametrisation) the isochrone forward model, with
    importance weighting the forward model of every band and the prior, and the model's
    quantile recalibration if its directory has one (``ysoscale recalibrate``)."""

    model: PosteriorEstimator | Simformer
    forward: ForwardModel | None
    device: str
    weighting: SampleWeighting | None = None
    recalibration: QuantileRecalibration | None = None


def resolve_device(device: str) -> str:
    """``"cuda"`` only where CUDA exists (an error otherwise), else ``"cpu"``.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("a CUDA device was asked for, but torch sees none on this worker")
    return device


@functools.lru_cache(maxsize=4)
def load_models(
    model_dir: str | None, device: str, isochrones: bool, weighting: bool = False
) -> LoadedModels:
    """Load the estimator from ``model_dir`` (None: the shipped default) onto ``device``.

    Weights are read from the path (safetensors), never unpickled. With ``isochrones``
    the cached isochrone grid is loaded too (in a ForwardModel restricted to one band:
    only its isochrone lookup is used). Cached: one load per process and argument set.

    Examples
    --------
    >>> loaded = load_models(None, "cpu", isochrones=False)  # doctest: +SKIP
    >>> loaded.model.config.params[0]                        # doctest: +SKIP
    'log10_mass'
    """
    device = resolve_device(device)
    from ysoscale.nn.default import resolve_model

    if model_dir is None:
        from ysoscale.nn.default import load_default_model

        model = load_default_model(map_location=device)
    else:
        model = load_estimator(model_dir, map_location=device)  # by its model card
    model.eval()
    forward = None
    if isochrones:
        forward = _isochrone_forward_model().to(device)
    weights = _sample_weighting(model.config.bands, device) if weighting else None
    recalibration = QuantileRecalibration.load(resolve_model(model_dir))
    return LoadedModels(model, forward, device, weights, recalibration)


def _sample_weighting(bands: tuple[str, ...], device: str) -> SampleWeighting:
    """The forward model of ``bands`` and the default prior, for importance weights."""
    from ysoscale.infer.prior_density import load_default_prior_density

    forward = _grid_forward_model(list(bands))
    return SampleWeighting(forward.to(device), load_default_prior_density(map_location=device))


def _isochrone_forward_model() -> ForwardModel:
    """A ForwardModel for its isochrone lookup: one band of the photometry grid is read
    (lazily, from the store the driver checked), not the whole grid."""
    return _grid_forward_model(["gaia_g"])


def _grid_forward_model(bands: list[str]) -> ForwardModel:
    """A ForwardModel of ``bands`` only, read from the cached grids the driver checked."""
    import xarray as xr

    from ysoscale.physics.isochrones import load_isochrone_grid
    from ysoscale.physics.photometry import photometry_grid_path

    with xr.open_zarr(photometry_grid_path()) as grid:
        missing = sorted(set(bands) - {str(b) for b in grid.band.values})
        if missing:
            raise ValueError(f"the photometry grid has no band(s) {missing} of the model")
        return ForwardModel(grid.sel(band=bands), load_isochrone_grid(progress=False), bands=bands)


def plugin_name(
    model_dir: str | None, device: str, isochrones: bool, weighting: bool = False
) -> str:
    """Name of the plugin serving these models (two runs with other models never collide)."""
    key = f"{Path(model_dir).resolve() if model_dir else 'default'}|{device}|{isochrones}"
    key += "|weighted" if weighting else ""
    return "ysoscale-infer-" + hashlib.sha1(key.encode()).hexdigest()[:12]


class ModelPlugin(WorkerPlugin):
    """Load the inference models once on each worker, onto its device.

    Parameters
    ----------
    model_dir : str, optional
        Model directory visible from the workers (None: the default shipped in the
        package, which every worker has).
    device : {"cpu", "cuda"}
        On a LocalCUDACluster each worker sees its own GPU as ``cuda``.
    isochrones : bool
        Also load the isochrone grid (from the worker's ``YSOSCALE_CACHE_DIR``).
    weighting : bool
        Also load the forward model of the estimator's bands and the default prior, for
        importance weights (:class:`~ysoscale.infer.kernel.SampleWeighting`).

    Examples
    --------
    >>> plugin = ModelPlugin(None, "cpu", isochrones=True)
    >>> plugin.name.startswith("ysoscale-infer-")
    True
    >>> client.register_plugin(plugin)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_dir: str | None,
        device: str = "cpu",
        isochrones: bool = True,
        weighting: bool = False,
    ):
        self.model_dir = None if model_dir is None else str(model_dir)
        self.device = device
        self.isochrones = isochrones
        self.weighting = weighting
        self.name = plugin_name(self.model_dir, device, isochrones, weighting)
        self.loaded: LoadedModels | None = None

    def setup(self, worker) -> None:
        import dask
        import numcodecs.blosc
        import zarr

        # one Dask worker thread = one core: keep torch and the codecs off the others' cores
        torch.set_num_threads(1)
        zarr.config.set({"threading.max_workers": 1})
        numcodecs.blosc.set_nthreads(1)
        # setup() runs in the worker's event loop: grids read there must use local
        # threads, not the worker's Client if an earlier task (lsdb, hats-import) made one.
        with dask.config.set(scheduler="threads"):
            self.loaded = load_models(self.model_dir, self.device, self.isochrones,
                                      self.weighting)  # fmt: skip

    def teardown(self, worker) -> None:
        self.loaded = None


def worker_models(
    model_dir: str | None, device: str, isochrones: bool, weighting: bool = False
) -> LoadedModels:
    """The models of this process: the plugin's on a Dask worker, else loaded (once) here."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return load_models(model_dir, device, isochrones, weighting)
    plugin = worker.plugins.get(plugin_name(model_dir, device, isochrones, weighting))
    if plugin is not None and plugin.loaded is not None:
        return plugin.loaded
    return load_models(model_dir, device, isochrones, weighting)
