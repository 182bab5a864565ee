"""The default estimator that ships inside the package (``ysoscale/data/default_model/``)."""

from __future__ import annotations

import json
from pathlib import Path

from ysoscale.nn.npe import PosteriorEstimator

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "default_model"


def default_model_card() -> dict:
    """The shipped model's card: what it was trained on, for how long, how well."""
    path = DEFAULT_MODEL_DIR / "model_card.json"
    if not path.exists():
        raise FileNotFoundError(f"no default model ships in {DEFAULT_MODEL_DIR}")
    return json.loads(path.read_text())


def load_default_model(map_location: str = "cpu") -> PosteriorEstimator:
    """Load the shipped default estimator (safetensors; no pickle).

    Examples
    --------
    >>> model = load_default_model()  # doctest: +SKIP
    >>> model.config.params
    ('log10_mass', 'log10_age', 'mh', 'log10_distance', 'av', 'rv')
    """
    default_model_card()  # a clear error if it is missing
    return PosteriorEstimator.load(DEFAULT_MODEL_DIR, map_location=map_location)
