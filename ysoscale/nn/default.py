"""The default estimator that ships inside the package (``ysoscale/data/default_model/``)."""

from __future__ import annotations

import json
from pathlib import Path

from ysoscale.nn.npe import PosteriorEstimator

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "default_model"

SHIPPED_MODELS: dict[str, Path] = {
    "default": DEFAULT_MODEL_DIR,
    "atmospheric": DEFAULT_MODEL_DIR.parent / "atmospheric_model",
}
"""Models inside the package, by the name ``infer(model=...)``/``--model`` accepts:
``default`` (physical parameters: mass, age, [M/H], distance, A_V, R_V, with Teff, log g,
L, R derived through the isochrones) and ``atmospheric`` (Teff, log g, [M/H], A_V, R_V,
distance modulus directly; no ages, but giants and other stars off the young-star-heavy
isochrone prior are served far better, see the README)."""


def resolve_model(model: str | Path | None) -> Path:
    """The directory of ``model``: a shipped model's name, a directory, or None (default).

    Examples
    --------
    >>> resolve_model(None) == DEFAULT_MODEL_DIR
    True
    >>> resolve_model("atmospheric").name
    'atmospheric_model'
    """
    if model is None:
        return DEFAULT_MODEL_DIR
    if str(model) in SHIPPED_MODELS and not Path(model).exists():
        return SHIPPED_MODELS[str(model)]
    return Path(model)


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
    >>> model = load_default_model()
    >>> model.config.params
    ('log10_mass', 'log10_age', 'mh', 'log10_distance', 'av', 'rv')
    """
    default_model_card()  # a clear error if it is missing
    return PosteriorEstimator.load(DEFAULT_MODEL_DIR, map_location=map_location)
