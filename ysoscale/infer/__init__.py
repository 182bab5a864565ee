"""Inference: per-partition kernel, importance sampling, per-worker models, the posterior
cube and its summary.

The numeric parts (kernel, importance sampling and its detection-pattern term, prior
density) import no Dask; the
orchestration (``infer``, the worker plugin) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ysoscale.infer.cube import FLAG_BITS, NOT_WRITTEN, PADDING, Layout, open_cube
from ysoscale.infer.kernel import STATS, infer_arrays, output_params, standard_normal

_LAZY = {
    "InferReport": "ysoscale.infer.run",
    "infer": "ysoscale.infer.run",
    "ModelPlugin": "ysoscale.infer.plugin",
    "load_models": "ysoscale.infer.plugin",
    "worker_models": "ysoscale.infer.plugin",
    "importance_sample": "ysoscale.infer.importance",
    "DetectionSelection": "ysoscale.infer.selection",
    "survey_footprints": "ysoscale.infer.selection",
    "VariabilityEvidence": "ysoscale.infer.variability",
    "load_default_prior_density": "ysoscale.infer.prior_density",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ysoscale.infer' has no attribute {name!r}")


__all__ = [
    "FLAG_BITS",
    "DetectionSelection",
    "NOT_WRITTEN",
    "PADDING",
    "STATS",
    "InferReport",
    "VariabilityEvidence",
    "Layout",
    "ModelPlugin",
    "importance_sample",
    "infer",
    "infer_arrays",
    "load_default_prior_density",
    "load_models",
    "open_cube",
    "output_params",
    "standard_normal",
    "survey_footprints",
    "worker_models",
]
