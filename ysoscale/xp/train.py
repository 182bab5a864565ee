"""Training the XP scatter-VAE on an ``ysoscale ingest-xp`` store.

:func:`fit_svae` is the loop on arrays (no files): Adam with a one-cycle schedule
(warm-up, then cosine annealing), gradient clipping, the best state by validation loss
kept. :func:`train_svae` is what ``ysoscale train --model svae`` calls: it reads and
normalises the store, holds out a validation share chosen by a hash of each source_id
(the same stars whatever else the store holds), initialises the model from PCA of the
training stars (see :meth:`~ysoscale.nn.svae.ScatterVAE.init_linear`), trains, fits
HDBSCAN populations on the training latents and writes the model directory:

    model.safetensors, model_card.json        the sVAE (safetensors; card in JSON)
    populations.safetensors, populations.json  the clustered sample

A directory that already holds an sVAE is trained further from its weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ysoscale import __version__
from ysoscale.nn.model_files import CARD_FILE
from ysoscale.nn.svae import ScatterVAE, SVAEConfig
from ysoscale.xp.data import read_store
from ysoscale.xp.kernel import encode_arrays
from ysoscale.xp.normalise import NORMALISATION, XPArrays, robust_standardisation
from ysoscale.xp.populations import fit_populations


@dataclass(frozen=True)
class XPTrainingConfig:
    """Settings of :func:`train_svae` (TOML table ``[training]`` at the command line).

    Parameters
    ----------
    epochs, batch_size, learning_rate : int, int, float
        Passes over the training stars, stars per step, peak Adam learning rate.
    validation_fraction : float
        Share of stars held out (by a hash of source_id and ``seed``).
    seed : int
        Seed of initialisation, batches, latent draws and the split.
    max_minutes : float, optional
        Stop after about this long (the best state so far is kept).
    device : str
        ``"cpu"`` or ``"cuda"``.
    max_stars : int, optional
        Train on a random sample of this many stars of the store.
    min_cluster_size, min_samples : int
        HDBSCAN's smallest population and density neighbourhood on the training latents.

    Examples
    --------
    >>> XPTrainingConfig.from_dict({"epochs": 5}).batch_size
    128
    """

    epochs: int = 300
    batch_size: int = 128
    learning_rate: float = 3e-4
    validation_fraction: float = 0.2
    seed: int = 0
    max_minutes: float | None = None
    device: str = "cpu"
    max_stars: int | None = None
    min_cluster_size: int = 15
    min_samples: int = 5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(
                f"epochs, batch_size and learning_rate must be positive, got {self.epochs}, "
                f"{self.batch_size}, {self.learning_rate}"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.min_cluster_size < 2 or self.min_samples < 1:
            raise ValueError(
                f"min_cluster_size must be >= 2 and min_samples >= 1, got "
                f"{self.min_cluster_size}, {self.min_samples}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> XPTrainingConfig:
        """Build from a mapping; misspelled keys are rejected by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown sVAE training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def validation_mask(source_id: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Held-out stars: ``splitmix64(source_id + seed) / 2**64 < fraction``.

    A star's side of the split depends only on its own source_id and the seed.

    Examples
    --------
    >>> mask = validation_mask(np.arange(100_000), 0.2)
    >>> round(float(mask.mean()), 2)
    0.2
    """
    with np.errstate(over="ignore"):
        z = np.asarray(source_id, dtype=np.int64).astype(np.uint64) + np.uint64(seed)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53) < fraction


@dataclass
class FitHistory:
    """Mean loss per epoch and the epoch whose state was kept."""

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False


def _tensors(arrays: XPArrays, device: str) -> tuple[torch.Tensor, ...]:
    rows = arrays.usable
    x = torch.as_tensor(arrays.coefficients[rows], device=device)
    sigma = torch.as_tensor(arrays.errors[rows], device=device)
    corr = None
    if arrays.correlations is not None and np.isfinite(arrays.correlations[rows]).any():
        corr = torch.as_tensor(arrays.correlations[rows], device=device)
    return x, sigma, corr


@torch.no_grad()
def _mean_loss(model: ScatterVAE, x, sigma, corr, batch_size: int) -> float:
    model.eval()
    total = 0.0
    for first in range(0, len(x), batch_size):
        part = slice(first, first + batch_size)
        c = None if corr is None else corr[part]
        total += float(model.loss(x[part], sigma[part], c).sum())
    return total / max(len(x), 1)


def fit_svae(
    model: ScatterVAE,
    train: XPArrays,
    validation: XPArrays | None,
    config: XPTrainingConfig,
    *,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> FitHistory:
    """Train ``model`` in place on the usable stars of ``train``; keep the best state.

    The kept state is the one with the lowest validation loss (training loss without
    validation stars). ``on_epoch(epoch, train_loss, validation_loss)`` is called after
    every epoch.

    Examples
    --------
    >>> from ysoscale.xp.normalise import normalise
    >>> rng = np.random.default_rng(0)
    >>> bp, rp = rng.normal(size=(64, 55)) + 5.0, rng.normal(size=(64, 55)) + 5.0
    >>> arrays = normalise(np.arange(64), bp, np.ones((64, 55)), rp, np.ones((64, 55)))
    >>> model = ScatterVAE(SVAEConfig(latent=2, hidden=(16,)))
    >>> history = fit_svae(model, arrays, None, XPTrainingConfig(epochs=2, batch_size=32))
    >>> len(history.train_loss)
    2
    """
    torch.manual_seed(config.seed)
    device = config.device
    model.to(device)
    x, sigma, corr = _tensors(train, device)
    if len(x) == 0:
        raise ValueError("no usable training star (all coefficients/errors NaN or flux <= 0)")
    held = _tensors(validation, device) if validation is not None else None
    if held is not None and len(held[0]) == 0:
        held = None
    steps = -(-len(x) // config.batch_size)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps
    )
    generator = torch.Generator().manual_seed(config.seed)
    history = FitHistory()
    best, best_state = float("inf"), copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        total = 0.0
        for first in range(0, len(x), config.batch_size):
            batch = order[first : first + config.batch_size]
            c = None if corr is None else corr[batch]
            loss = model.loss(x[batch], sigma[batch], c).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        train_loss = total / len(x)
        valid_loss = (
            _mean_loss(model, *held, config.batch_size * 8) if held is not None else train_loss
        )
        history.train_loss.append(train_loss)
        history.validation_loss.append(valid_loss)
        if valid_loss < best:
            best, best_state = valid_loss, copy.deepcopy(model.state_dict())
            history.best_epoch = epoch
        if on_epoch is not None:
            on_epoch(epoch, train_loss, valid_loss)
        minutes = (time.perf_counter() - started) / 60.0
        if config.max_minutes is not None and minutes > config.max_minutes:
            history.stopped_early = epoch + 1 < config.epochs
            break
    model.load_state_dict(best_state)
    model.eval()
    return history


def new_model(config: SVAEConfig, train: XPArrays, seed: int = 0) -> ScatterVAE:
    """A model standardised on the usable training stars and, with a linear path,
    initialised from their principal components."""
    torch.manual_seed(seed)
    model = ScatterVAE(config)
    x = train.coefficients[train.usable]
    if len(x) <= config.latent:
        raise ValueError(
            f"{len(x)} usable training stars are too few for a {config.latent}-d latent"
        )
    center, scale = robust_standardisation(x)
    model.set_standardisation(torch.as_tensor(center), torch.as_tensor(scale))
    if config.linear_path:
        model.init_linear(torch.as_tensor(x))
    return model


@dataclass
class SVAETrainReport:
    """What :func:`train_svae` did."""

    out_dir: Path
    n_train: int
    n_validation: int
    n_unusable: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    validation: dict[str, float]
    populations: dict[str, int]
    seconds: float
    resumed: bool

    def summary(self) -> str:
        """Human-readable account of the run."""
        v = self.validation
        lines = [
            f"{self.out_dir}: sVAE trained on {self.n_train:,} stars "
            f"({self.n_validation:,} held out, {self.n_unusable:,} unusable) "
            f"{'further ' if self.resumed else ''}for {self.epochs_run} epoch(s) "
            f"in {self.seconds:.0f} s; best epoch {self.best_epoch}"
            f"{' (stopped early)' if self.stopped_early else ''}",
            f"held-out reconstruction chi2/dof: median {v['chi2_dof_median']:.3f}, "
            f"mean {v['chi2_dof_mean']:.3f}; anomaly median {v['anomaly_median']:.3f}",
            f"populations (HDBSCAN on the training latents): {self.populations}",
        ]
        return "\n".join(lines)


def _metrics(model: ScatterVAE, arrays: XPArrays) -> dict[str, float]:
    out = encode_arrays(model, arrays)
    ok = arrays.usable
    if not ok.any():
        return {k: float("nan") for k in ("chi2_dof_median", "chi2_dof_mean", "anomaly_median")}
    return {
        "chi2_dof_median": float(np.median(out["chi2_dof"][ok])),
        "chi2_dof_mean": float(np.mean(out["chi2_dof"][ok])),
        "anomaly_median": float(np.median(out["anomaly"][ok])),
    }


def train_svae(
    store: str | Path,
    out_dir: str | Path,
    model_config: SVAEConfig | None = None,
    config: XPTrainingConfig | None = None,
    *,
    progress: bool = True,
) -> SVAETrainReport:
    """Train an sVAE on an ingest-xp store and save it (with populations) to ``out_dir``.

    Parameters
    ----------
    store : path
        Zarr store written by ``ysoscale ingest-xp``.
    out_dir : path
        Model directory; trained further if it already holds an sVAE.
    model_config : SVAEConfig, optional
        Default ``SVAEConfig()``; must match the saved one when resuming.
    config : XPTrainingConfig, optional

    Raises
    ------
    ValueError
        If the store is not an XP store, too few stars are usable, or ``model_config``
        differs from the model being resumed.

    Examples
    --------
    >>> report = train_svae("xp.zarr", "svae_model")  # doctest: +SKIP
    >>> print(report.summary())                      # doctest: +SKIP
    """
    started = time.perf_counter()
    config = config or XPTrainingConfig()
    out_dir = Path(out_dir)
    arrays = read_store(store, max_stars=config.max_stars, seed=config.seed)
    held = validation_mask(arrays.source_id, config.validation_fraction, config.seed)
    train, validation = arrays.subset(~held), arrays.subset(held)
    resumed = (out_dir / CARD_FILE).exists()
    if resumed:
        model = ScatterVAE.load(out_dir, map_location=config.device)
        if model_config is not None and model_config != model.config:
            raise ValueError(
                f"{out_dir} holds an sVAE with another configuration ({model.config}); "
                "use a new --out to train a different one"
            )
    else:
        model = new_model(model_config or SVAEConfig(), train, config.seed)

    show = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc="train svae", unit="epoch")

        def show(epoch: int, train_loss: float, valid_loss: float) -> None:
            bar.set_postfix(train=f"{train_loss:.3f}", validation=f"{valid_loss:.3f}")
            bar.update(1)

    history = fit_svae(model, train, validation, config, on_epoch=show)
    if progress:
        bar.close()
    model.cpu()
    latent = encode_arrays(model, train)["latent"][train.usable]
    populations = fit_populations(
        latent, min_cluster_size=config.min_cluster_size, min_samples=config.min_samples
    )
    metrics = _metrics(model, validation)
    card = {
        "normalisation": NORMALISATION,
        "trained_on": str(Path(store).resolve()),
        "training": asdict(config),
        "validation_split": {
            "fraction": config.validation_fraction,
            "seed": config.seed,
            "rule": "ysoscale.xp.train.validation_mask (splitmix64 of source_id + seed)",
        },
        "n_train": int(train.usable.sum()),
        "n_validation": int(validation.usable.sum()),
        "validation_metrics": metrics,
        "history": {
            "train_loss": history.train_loss,
            "validation_loss": history.validation_loss,
            "best_epoch": history.best_epoch,
        },
        "ysoscale_version": __version__,
    }
    model.save(out_dir, card)
    populations.save(out_dir)
    return SVAETrainReport(
        out_dir=out_dir,
        n_train=int(train.usable.sum()),
        n_validation=int(validation.usable.sum()),
        n_unusable=int((~arrays.usable).sum()),
        epochs_run=len(history.train_loss),
        best_epoch=history.best_epoch,
        stopped_early=history.stopped_early,
        validation=metrics,
        populations=populations.counts(),
        seconds=time.perf_counter() - started,
        resumed=resumed,
    )


__all__ = [
    "FitHistory",
    "SVAETrainReport",
    "XPTrainingConfig",
    "fit_svae",
    "new_model",
    "train_svae",
    "validation_mask",
]
