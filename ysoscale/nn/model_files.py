"""A model directory on disk: ``model.safetensors`` (weights) + ``model_card.json``.

Every estimator (:class:`~ysoscale.nn.npe.PosteriorEstimator`,
:class:`~ysoscale.nn.simformer.Simformer`, :class:`~ysoscale.nn.svae.ScatterVAE`) saves and
loads through these three functions, so the format and its safety rules live in one place:
weights are safetensors (never pickle), and the card's identifying keys (``config``, the
estimator's kind) are written from the model, never taken from the caller's extras.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"


def read_card(path_dir: str | Path) -> dict[str, Any]:
    """The model card of a saved model.

    Raises
    ------
    FileNotFoundError
        If ``path_dir`` has no model card.
    """
    card_path = Path(path_dir) / CARD_FILE
    if not card_path.exists():
        raise FileNotFoundError(f"no model card {card_path}: is {path_dir} a model directory?")
    return json.loads(card_path.read_text())


def save_model(
    module: torch.nn.Module,
    path_dir: str | Path,
    header: Mapping[str, Any],
    extras: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``module``'s weights and a card of ``header`` plus ``extras``.

    Parameters
    ----------
    module : the model
    path_dir : directory (created if needed)
    header : keys written from the model (its config, kind, sizes); ``extras`` may not
        override them
    extras : what the caller adds (training store, history, validation metrics)

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = save_model(torch.nn.Linear(2, 1), tmp, {"config": {"width": 2}}, {"note": "x"})
    ...     sorted(read_card(tmp))
    ['config', 'note']
    """
    clash = sorted(set(header) & set(extras or {}))
    if clash:
        raise ValueError(f"card extras may not contain {clash} (written from the model)")
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path / WEIGHTS_FILE))
    content = {**header, **(extras or {})}
    (path / CARD_FILE).write_text(json.dumps(content, indent=2, sort_keys=True))
    return path


def load_weights(
    module: torch.nn.Module, path_dir: str | Path, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load the safetensors weights of ``path_dir`` into ``module`` (strict) on the device."""
    device = torch.device(map_location)
    state = load_file(str(Path(path_dir) / WEIGHTS_FILE), device=str(device))
    module.load_state_dict(state, strict=True)
    return module.to(device)


__all__ = ["CARD_FILE", "WEIGHTS_FILE", "load_weights", "read_card", "save_model"]
