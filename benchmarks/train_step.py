"""Training throughput: stars/s through forward + backward + AdamW step of the estimator.

Times optimisation steps on synthetic stars with realistic band coverage (the loader is
not included; see ``python benchmarks/sample.py`` for inference) for the default
configuration, the same with coupling transforms, and the IrisML-size configuration, at
the given batch sizes. Last line: one JSON object, with the default configuration's
throughput relative to the IrisML-size one measured in the same run.

    python benchmarks/train_step.py [--device cpu|cuda] [--batch 2048,8192] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sample import synthetic_stars  # benchmarks/ is on sys.path when run as a script

from ysoscale.nn import EstimatorConfig, PosteriorEstimator


def time_steps(config: EstimatorConfig, batch: int, steps: int, device: torch.device) -> float:
    """Stars/s of ``steps`` optimisation steps after three warm-up steps."""
    torch.manual_seed(0)
    model = PosteriorEstimator(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    stars = synthetic_stars(config.bands, batch, seed=1)
    tensors = {k: torch.as_tensor(v, device=device) for k, v in stars.items()}
    lo, hi = (torch.tensor(b, device=device) for b in config.bounds)
    tensors["theta"] = lo + (hi - lo) * torch.rand(batch, config.n_param, device=device)

    def step() -> None:
        loss = model.nll(**tensors)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", default=None, help="comma-separated batch sizes")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    sizes = [int(b) for b in (args.batch or ("2048,8192" if gpu else "512")).split(",")]
    steps = 3 if args.quick else (30 if gpu else 5)
    configs = {
        "default": EstimatorConfig(),
        "default_coupling": EstimatorConfig(passes=2),
        "irisml": EstimatorConfig.irisml(),
    }
    name = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    result: dict[str, object] = {"device": name}
    print(f"device: {name}")
    for batch in sizes:
        for label, config in configs.items():
            rate = time_steps(config, batch, steps, device)
            result[f"{label}_batch{batch}_stars_per_s"] = round(rate, 1)
            print(f"{label:<18} batch {batch:>6}: {rate:>12,.0f} stars/s")
        result[f"default_vs_irisml_batch{batch}"] = round(
            result[f"default_batch{batch}_stars_per_s"]
            / result[f"irisml_batch{batch}_stars_per_s"],
            2,
        )
    print(
        json.dumps({k: (float(v) if isinstance(v, np.floating) else v) for k, v in result.items()})
    )


if __name__ == "__main__":
    main()
