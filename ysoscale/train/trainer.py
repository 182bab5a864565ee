"""Training loop: AdamW, warm-up + cosine schedule, early stopping, resumable checkpoints.

Checkpoints never use pickle for weights: the model is saved with safetensors; the
optimizer state is saved with ``torch.save`` and read back with ``weights_only=True``.
``train`` resumes from ``OUT/checkpoint/`` when it exists, so a long CPU training can be
spread over several sessions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.settings import reject_unknown_keys
from ysoscale.train.extend import with_new_bands
from ysoscale.train.loader import Batch, StoreLoader, StoreUnion


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings (all validated; unknown keys rejected by ``from_dict``)."""

    epochs: int = 40
    batch_size: int = 2048
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    patience: int = 6
    band_dropout: float = 0.1
    error_inflation: float = 0.3
    saturation_release: float = 0.2
    survey_dropout: float = 0.15
    survey_subset_rate: float = 0.25
    validation_fraction: float = 0.05
    seed: int = 0
    max_minutes: float | None = None
    time_budget_minutes: float | None = None
    device: str = "cpu"
    loader_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        for name in (
            "band_dropout",
            "survey_dropout",
            "survey_subset_rate",
            "validation_fraction",
            "error_inflation",
            "saturation_release",
        ):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        for name in ("max_minutes", "time_budget_minutes"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.loader_threads is not None and self.loader_threads < 1:
            raise ValueError(f"loader_threads must be >= 1, got {self.loader_threads}")

    @property
    def threads_for_loader(self) -> int:
        """Chunks prepared concurrently: given, else 1 on CPU (the cores train) and up to
        8 on CUDA (the cores are free to feed the GPU)."""
        if self.loader_threads is not None:
            return self.loader_threads
        return 1 if self.device == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingConfig:
        reject_unknown_keys(cls, values, "training")
        return cls(**values)


@dataclass
class TrainingReport:
    """What a call to :func:`train` did."""

    out_dir: Path
    epochs_run: int
    best_validation_nll: float
    stopped_early: bool
    seconds: float


def _tensors(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "theta": torch.from_numpy(batch.theta).to(device),
        "mag": torch.from_numpy(batch.mag).to(device),
        "mag_err": torch.from_numpy(batch.mag_err).to(device),
        "parallax": torch.from_numpy(batch.parallax).to(device),
        "parallax_error": torch.from_numpy(batch.parallax_error).to(device),
    }


def _learning_rate_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay over the whole run."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def step_schedule(
    training: TrainingConfig, state: dict, epoch_fraction: float, epoch_start: float
) -> float | None:
    """Learning-rate factor of the next step, or None when the time budget is spent.

    The schedule anneals over ``training.epochs`` or, when set, over
    ``time_budget_minutes`` (across resumes), whichever ends first. Once the budget is
    spent the rate is zero, so the epoch is cut there rather than finished for nothing.
    ``epoch_fraction`` is the share of this epoch done; ``epoch_start`` its start
    (``time.perf_counter()``). Shared by every trainer's batch loop.

    Examples
    --------
    >>> config = TrainingConfig(epochs=10, warmup_steps=1, time_budget_minutes=60)
    >>> round(step_schedule(config, {"epoch": 5, "step": 100, "minutes": 0.0}, 0.0,
    ...                     time.perf_counter()), 3)   # half the epochs: cos(pi/2)
    0.5
    >>> step_schedule(config, {"epoch": 1, "step": 100, "minutes": 60.0}, 0.5,
    ...               time.perf_counter()) is None
    True
    """
    progress = (state["epoch"] + epoch_fraction) / training.epochs
    if training.time_budget_minutes is not None:
        spent = state.get("minutes", 0.0) + (time.perf_counter() - epoch_start) / 60
        if spent >= training.time_budget_minutes:
            return None
        progress = max(progress, spent / training.time_budget_minutes)
    return _learning_rate_factor(state["step"], progress, training.warmup_steps)


@torch.no_grad()
def validation_nll(
    model: PosteriorEstimator, loader: StoreLoader | StoreUnion, device: torch.device
) -> float:
    """Mean negative log posterior density of the held-out stars."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader.epoch(0):
        tensors = _tensors(batch, device)
        total += float(model.nll(**tensors)) * len(batch)
        count += len(batch)
    model.train()
    return total / max(count, 1)


def train(
    store: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    estimator: EstimatorConfig | None = None,
    training: TrainingConfig | None = None,
    *,
    extend_from: str | Path | None = None,
    new_bands: Sequence[str] = (),
    init_from: str | Path | None = None,
    progress: bool = True,
) -> TrainingReport:
    """Train a :class:`PosteriorEstimator` on a simulated store; resume if interrupted.

    ``store`` may be several stores (a general one and a magnitude-limited one, say):
    their chunks are read in one shuffled order (:class:`~ysoscale.train.loader.StoreUnion`)
    and the validation split is taken from each.

    Writes ``OUT/model.safetensors`` and ``OUT/model_card.json`` (the best validation
    epoch so far) and ``OUT/checkpoint/`` (the latest state, for resuming).

    With ``new_bands``, the model in ``extend_from`` is extended by those bands and only
    their embeddings are trained (:mod:`ysoscale.train.extend`); ``estimator`` is then
    ignored, and the old bands' posteriors stay exactly as they were.

    With ``init_from`` (a model directory), a new run starts from that model's weights
    wherever a weight of ``estimator`` has the same name and shape (a warm start: e.g. the
    same architecture with another ``parallax_encoding``, whose parallax embedding must be
    relearnt while the rest is already trained). Ignored when resuming from a checkpoint.

    Examples
    --------
    >>> report = train("train.zarr", "model/", training=TrainingConfig(epochs=2))  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    training = training or TrainingConfig()
    out = Path(out_dir)
    checkpoint = out / "checkpoint"
    device = torch.device(training.device)
    extension: dict[str, Any] = {}
    if new_bands and init_from is not None:
        raise ValueError(
            "init_from cannot be combined with new_bands: a warm start would overwrite the "
            "extended model's frozen weights, and the old bands' posteriors would change"
        )
    if new_bands:
        if extend_from is None:
            raise ValueError("new_bands needs extend_from (the model to extend)")
        base = PosteriorEstimator.load(extend_from, map_location=device)
        model = with_new_bands(base, new_bands, seed=training.seed)
        estimator = model.config
        extension = {"extended_from": str(extend_from), "new_bands": list(new_bands)}
    else:
        estimator = estimator or EstimatorConfig()
        model = PosteriorEstimator(estimator)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 products; the flow stays fp32
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(training.seed)
    train_loader, val_loader, store_names = store_loaders(
        store, training, estimator.params, estimator.bands
    )

    model = model.to(device)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=training.learning_rate,
        # decoupled weight decay would move the frozen rows of an extended embedding
        weight_decay=0.0 if extension else training.weight_decay,
    )
    state = {"epoch": 0, "step": 0, "best": math.inf, "bad_epochs": 0, "history": [],
             "minutes": 0.0}  # fmt: skip
    if (checkpoint / "state.json").exists():
        resumed = PosteriorEstimator.load(checkpoint, map_location=device)
        if resumed.config != estimator:
            raise ValueError(f"{checkpoint} holds a model with another configuration")
        model.load_state_dict(resumed.state_dict())
        optimizer.load_state_dict(
            torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True)
        )
        state = json.loads((checkpoint / "state.json").read_text())
        print(f"resuming from epoch {state['epoch']} (best validation NLL {state['best']:.4f})")
        restart_on_new_stores(state, store_names)
    elif init_from is not None:
        copied = warm_start(model, PosteriorEstimator.load(init_from, map_location=device))
        print(f"initialised {copied} weight tensors from {init_from}")
        extension = extension | {"initialised_from": str(init_from)}
    state["stores"] = store_names

    started = time.perf_counter()
    stopped_early = False
    # until an epoch has been counted, assume every stored star is usable (an upper bound)
    steps_per_epoch = state.get("steps_per_epoch") or train_loader.max_batches()
    model.train()
    while state["epoch"] < training.epochs and not out_of_time(training, state, started):
        epoch = state["epoch"]
        bar = tqdm(desc=f"epoch {epoch + 1}/{training.epochs}", unit="batch", disable=not progress)
        running, seen = 0.0, 0
        epoch_start = time.perf_counter()
        cut = False
        for i, batch in enumerate(train_loader.epoch(epoch)):
            factor = step_schedule(training, state, i / steps_per_epoch, epoch_start)
            if factor is None:
                cut = True
                break
            tensors = _tensors(batch, device)
            for group in optimizer.param_groups:
                group["lr"] = training.learning_rate * factor
            loss = model.nll(**tensors)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], 5.0)
            optimizer.step()
            state["step"] += 1
            running += float(loss.detach()) * len(batch)
            seen += len(batch)
            bar.set_postfix(nll=f"{running / seen:.3f}")
            bar.update()
        bar.close()
        if not cut:
            state["steps_per_epoch"] = steps_per_epoch = i + 1
        state["minutes"] = state.get("minutes", 0.0) + (time.perf_counter() - epoch_start) / 60
        val = validation_nll(model, val_loader, device)
        state["history"].append({"epoch": epoch + 1, "train_nll": running / max(seen, 1),
                                 "validation_nll": val})  # fmt: skip
        state["epoch"] = epoch + 1
        improved = val < state["best"]
        if improved:
            state["best"], state["bad_epochs"] = val, 0
        else:
            state["bad_epochs"] += 1
        card = training_card(training, state, train_loader) | extension
        if improved:
            model.save(out, card=card)
        save_checkpoint(checkpoint, model, optimizer, state, card)
        print(
            f"epoch {epoch + 1}: train NLL {running / max(seen, 1):.4f}, validation NLL {val:.4f}"
        )
        if state["bad_epochs"] >= training.patience:
            stopped_early = True
            break
        if out_of_time(training, state, started):
            break
    return TrainingReport(out, state["epoch"], state["best"], stopped_early,
                          time.perf_counter() - started)  # fmt: skip


def warm_start(model: torch.nn.Module, source: torch.nn.Module) -> int:
    """Copy into ``model`` every weight of ``source`` with the same name and shape; return
    how many were copied. Names the weights left at their initial values.

    Raises
    ------
    ValueError
        If no weight matches (a warm start from an unrelated model).
    """
    theirs = source.state_dict()
    ours = model.state_dict()
    same = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    if not same:
        raise ValueError("no weight of the initial model matches the new model's")
    left = sorted(set(ours) - set(same))
    if left:
        print(f"warm start: {len(left)} tensors keep their initial values: {left[:8]}")
    model.load_state_dict(same, strict=False)
    return len(same)


def out_of_time(training: TrainingConfig, state: dict, started: float) -> bool:
    """Whether the time budget (across resumes) or this call's ``max_minutes`` is spent;
    says which on standard output. Shared by every trainer's epoch loop."""
    if training.time_budget_minutes is not None and (
        state["minutes"] >= training.time_budget_minutes
    ):
        print(f"time budget of {training.time_budget_minutes} min spent")
        return True
    elapsed = (time.perf_counter() - started) / 60
    if training.max_minutes is not None and elapsed > training.max_minutes:
        print(f"stopping after {elapsed:.1f} min (max_minutes); re-run to resume")
        return True
    return False


def store_loaders(
    store: str | Path | Sequence[str | Path],
    training: TrainingConfig,
    params: Sequence[str],
    bands: Sequence[str],
    *,
    with_truth: bool = False,
) -> tuple[StoreLoader | StoreUnion, StoreLoader | StoreUnion, list[str]]:
    """The training and validation loaders of one store or several, and the stores' names.

    The training split gets every augmentation of ``training`` (band, survey and
    survey-subset dropout, error inflation, saturation release, fresh noise each epoch);
    the validation split none of them. Several stores are read as one
    (:class:`~ysoscale.train.loader.StoreUnion`), store ``i`` with seed ``seed + 1000 i``.
    Shared by the NPE and simformer trainers, so both see the same training data.

    Raises
    ------
    ValueError
        If no store is given.
    """
    stores = [store] if isinstance(store, (str, Path)) else list(store)
    if not stores:
        raise ValueError("no training store given")
    common = {
        "params": tuple(params),
        "bands": tuple(bands),
        "batch_size": training.batch_size,
        "validation_fraction": training.validation_fraction,
        "threads": training.threads_for_loader,
        "with_truth": with_truth,
    }
    train = [StoreLoader(path, split="train", band_dropout=training.band_dropout,
                         error_inflation=training.error_inflation,
                         saturation_release=training.saturation_release,
                         survey_dropout=training.survey_dropout,
                         survey_subset_rate=training.survey_subset_rate,
                         seed=training.seed + 1000 * i, **common)
             for i, path in enumerate(stores)]  # fmt: skip
    validation = [StoreLoader(path, split="validation", band_dropout=0.0, survey_dropout=0.0,
                              redraw_noise=False, seed=training.seed + 1000 * i, **common)
                  for i, path in enumerate(stores)]  # fmt: skip
    return _loader(train), _loader(validation), [str(path) for path in stores]


def restart_on_new_stores(state: dict, store_names: list[str]) -> None:
    """On resuming with other training stores, forget the best validation loss (the
    validation split changed with the stores, so old losses are not comparable)."""
    previous = state.get("stores", store_names[:1])  # older checkpoints: one store
    if previous != store_names:
        print(f"training stores changed ({previous} -> {store_names}): "
              "the best validation loss starts afresh")  # fmt: skip
        state["best"], state["bad_epochs"] = math.inf, 0
        state.pop("steps_per_epoch", None)


def _loader(loaders: list[StoreLoader]) -> StoreLoader | StoreUnion:
    return loaders[0] if len(loaders) == 1 else StoreUnion(loaders)


def training_card(
    training: TrainingConfig,
    state: dict,
    loader: StoreLoader | StoreUnion,
    loss_key: str = "best_validation_nll",
) -> dict:
    """What the model saw and how well it did (goes into model_card.json); shared by the
    NPE and Simformer trainers, which differ only in the name of their validation loss."""
    keys = ("photometry_grid_hash", "isochrone_grid_hash", "config")
    loaders = loader.loaders if isinstance(loader, StoreUnion) else (loader,)
    extra = {}
    if len(loaders) > 1:
        extra["additional_training_stores"] = [
            {"path": str(more.path), "chunks": len(more.chunks),
             "attrs": {k: more.store_attrs.get(k) for k in keys}}
            for more in loaders[1:]
        ]  # fmt: skip
    return extra | {
        "training_store": str(loaders[0].path),
        "training_store_attrs": {k: loader.store_attrs.get(k) for k in keys},
        "training_chunks": len(loader.chunks),
        "training": dataclasses.asdict(training),
        "epochs": state["epoch"],
        loss_key: state["best"],
        "history": state["history"],
        "trained_at_unix": time.time(),
    }


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,
    card: dict,
) -> None:
    """Write the latest state (weights + ``card``, optimizer, ``state.json``) next to the
    old one, then swap: an interrupt never leaves a half-written checkpoint."""
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, card=card)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, default=float))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


__all__ = ["TrainingConfig", "TrainingReport", "train", "validation_nll"]
