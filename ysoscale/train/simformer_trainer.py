"""Training loop of the flow-matching simformer (:mod:`ysoscale.nn.simformer`).

The same streaming loader as the set-transformer estimator
(:class:`~ysoscale.train.loader.StoreLoader`, noise redrawn and surveys / bands dropped
every epoch), asked for the noise-free magnitudes and parallaxes too (the targets of the
unobserved observables); the same optimisation settings
(:class:`~ysoscale.train.trainer.TrainingConfig`: AdamW, warm-up + cosine, early stopping,
time budget) and the same resumable checkpoints (safetensors weights, optimizer state read
back with ``weights_only=True``). The validation score is the flow-matching (+ guidance)
loss of the held-out chunks under a fixed seed, so epochs are comparable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.train.loader import Batch, StoreLoader
from ysoscale.train.trainer import (
    TrainingConfig,
    TrainingReport,
    out_of_time,
    restart_on_new_stores,
    save_checkpoint,
    step_schedule,
    store_loaders,
    training_card,
)

LOSS_KEY = "best_validation_loss"
"""Model-card key of the best validation loss (flow matching has no NLL)."""
STANDARDIZATION_STARS = 20_000
"""Training stars read to fit the token standardisation."""

VALIDATION_SEED = 12345


def _tensors(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    names = ("theta", "mag", "mag_err", "parallax", "parallax_error", "mag_true", "parallax_true")
    return {name: torch.from_numpy(getattr(batch, name)).to(device) for name in names}


def fit_standardization(
    loader: StoreLoader, config: SimformerConfig, n_stars: int = STANDARDIZATION_STARS
) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of every variable's clean value on training stars.

    Examples
    --------
    >>> loader = StoreLoader("train.zarr", SimformerConfig().params, SimformerConfig().bands,
    ...                      with_truth=True)  # doctest: +SKIP
    >>> fit_standardization(loader, SimformerConfig())["log10_age"]  # doctest: +SKIP
    (7.6, 1.2)
    """
    parts, seen = [], 0
    for batch in loader.epoch(0):
        columns = [batch.theta, batch.mag_true]
        if config.use_parallax:
            columns.append(batch.parallax_true[:, None])
        parts.append(np.concatenate(columns, axis=1).astype(np.float64))
        seen += len(batch)
        if seen >= n_stars:
            break
    values = np.concatenate(parts)
    out = {}
    for i, name in enumerate(config.variables):
        column = values[:, i][np.isfinite(values[:, i])]
        if not len(column):
            continue
        out[name] = (float(column.mean()), float(max(column.std(), 1e-3)))
    return out


@torch.no_grad()
def validation_loss(
    model: Simformer, loader: StoreLoader, device: torch.device, forward_model: Any = None
) -> float:
    """Mean loss of the held-out stars under a fixed seed (masks, noise and times)."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
    total, count = 0.0, 0
    for batch in loader.epoch(0):
        loss, _ = model.loss(**_tensors(batch, device), forward_model=forward_model,
                             generator=generator)  # fmt: skip
        total += float(loss) * len(batch)
        count += len(batch)
    model.train()
    return total / max(count, 1)


def guidance_forward_model(config: SimformerConfig, device: torch.device) -> Any:
    """The ForwardModel of the guidance term over ``config.bands`` (default grids)."""
    from ysoscale.physics.forward import ForwardModel
    from ysoscale.physics.grids import ensure_default_grids

    ensure_default_grids(progress=False)
    return ForwardModel.default(bands=config.bands).to(device)


def train_simformer(
    store: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    simformer: SimformerConfig | None = None,
    training: TrainingConfig | None = None,
    *,
    standardize: bool = True,
    forward_model: Any = None,
    progress: bool = True,
) -> TrainingReport:
    """Train a :class:`Simformer` on a simulated store; resume if interrupted.

    ``store`` may be several stores, read as one (as for
    :func:`~ysoscale.train.trainer.train`); the loaders are those of the set-transformer,
    with every augmentation of ``training`` (:func:`~ysoscale.train.trainer.store_loaders`).

    Writes ``OUT/model.safetensors`` and ``OUT/model_card.json`` (best validation epoch so
    far) and ``OUT/checkpoint/`` (latest state). With ``standardize`` (default) the token
    standardisation is fitted on the training split before training starts (a resumed run
    keeps the checkpoint's). ``forward_model`` (with isochrones, over the model's bands)
    serves the guidance term; when ``w_r > 0`` and none is given, the default grids are
    loaded. ``TrainingReport.best_validation_nll`` holds the best validation loss.

    Examples
    --------
    >>> report = train_simformer("train.zarr", "simformer/",
    ...                          training=TrainingConfig(epochs=2))  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    training = training or TrainingConfig()
    config = simformer or SimformerConfig()
    out = Path(out_dir)
    checkpoint = out / "checkpoint"
    device = torch.device(training.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
    torch.manual_seed(training.seed)
    train_loader, val_loader, store_names = store_loaders(
        store, training, config.params, config.bands, with_truth=True
    )
    resuming = (checkpoint / "state.json").exists()
    if resuming:
        resumed = Simformer.load(checkpoint, map_location=device)
        stored = dataclasses.replace(resumed.config, standardization=config.standardization)
        if stored != config:
            raise ValueError(f"{checkpoint} holds a model with another configuration")
        config = resumed.config
    elif standardize:
        config = config.with_standardization(fit_standardization(train_loader, config))
    model = Simformer(config).to(device)
    if config.w_r > 0 and forward_model is None:
        forward_model = guidance_forward_model(config, device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay
    )
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best": math.inf, "bad_epochs": 0,
                             "history": [], "minutes": 0.0}  # fmt: skip
    if resuming:
        model.load_state_dict(resumed.state_dict())
        optimizer.load_state_dict(
            torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True)
        )
        state = json.loads((checkpoint / "state.json").read_text())
        print(f"resuming from epoch {state['epoch']} (best validation loss {state['best']:.4f})")
        restart_on_new_stores(state, store_names)
    state["stores"] = store_names

    generator = torch.Generator(device=device).manual_seed(training.seed + 1 + state["step"])
    started = time.perf_counter()
    stopped_early = False
    steps_per_epoch = state.get("steps_per_epoch") or train_loader.max_batches()
    model.train()
    while state["epoch"] < training.epochs and not out_of_time(training, state, started):
        epoch = state["epoch"]
        bar = tqdm(desc=f"epoch {epoch + 1}/{training.epochs}", unit="batch", disable=not progress)
        running, running_physics, seen = 0.0, 0.0, 0
        epoch_start = time.perf_counter()
        i, cut = -1, False
        for i, batch in enumerate(train_loader.epoch(epoch)):
            factor = step_schedule(training, state, i / steps_per_epoch, epoch_start)
            if factor is None:
                cut = True
                break
            for group in optimizer.param_groups:
                group["lr"] = training.learning_rate * factor
            loss, parts = model.loss(**_tensors(batch, device), forward_model=forward_model,
                                     generator=generator)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            state["step"] += 1
            running += parts["fm"] * len(batch)
            running_physics += (parts["physics"] if config.w_r > 0 else 0.0) * len(batch)
            seen += len(batch)
            bar.set_postfix(fm=f"{running / seen:.3f}")
            bar.update()
        bar.close()
        if not cut:
            state["steps_per_epoch"] = steps_per_epoch = max(i + 1, 1)
        state["minutes"] = state.get("minutes", 0.0) + (time.perf_counter() - epoch_start) / 60
        val = validation_loss(model, val_loader, device, forward_model)
        record = {"epoch": epoch + 1, "train_fm": running / max(seen, 1), "validation_loss": val}
        if config.w_r > 0:
            record["train_physics"] = running_physics / max(seen, 1)
        state["history"].append(record)
        state["epoch"] = epoch + 1
        improved = val < state["best"]
        if improved:
            state["best"], state["bad_epochs"] = val, 0
        else:
            state["bad_epochs"] += 1
        card = training_card(training, state, train_loader, LOSS_KEY)
        if improved:
            model.save(out, card=card)
        save_checkpoint(checkpoint, model, optimizer, state, card)
        print(f"epoch {epoch + 1}: train FM {record['train_fm']:.4f}, validation loss {val:.4f}")
        if state["bad_epochs"] >= training.patience:
            stopped_early = True
            break
        if out_of_time(training, state, started):
            break
    return TrainingReport(out, state["epoch"], state["best"], stopped_early,
                          time.perf_counter() - started)  # fmt: skip


__all__ = ["fit_standardization", "guidance_forward_model", "train_simformer", "validation_loss"]
