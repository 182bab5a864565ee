"""Inference: per-partition kernel, per-worker models, the posterior cube and its summary."""

from ysoscale.infer.cube import FLAG_BITS, NOT_WRITTEN, PADDING, Layout, open_cube
from ysoscale.infer.kernel import STATS, infer_arrays, output_params, standard_normal
from ysoscale.infer.plugin import ModelPlugin, load_models, worker_models
from ysoscale.infer.run import InferReport, infer

__all__ = [
    "FLAG_BITS",
    "NOT_WRITTEN",
    "PADDING",
    "STATS",
    "InferReport",
    "Layout",
    "ModelPlugin",
    "infer",
    "infer_arrays",
    "load_models",
    "open_cube",
    "output_params",
    "standard_normal",
    "worker_models",
]
