"""``ysoscale demo``: the main job on the embedded default, on this machine.

Two parts: the forward model on three reference stars (:mod:`.reference`), then the
production chain (simulate → ingest → infer on a LocalCluster → plots) on a synthetic
catalog and the shipped ρ Oph sample (:mod:`.chain`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ysoscale.demo.chain import run_chain
from ysoscale.demo.reference import reference_stars

__all__ = ["run_demo"]


def run_demo(
    out_dir: str | Path = "ysoscale_demo",
    *,
    n_synthetic: int = 2000,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Run both parts into ``out_dir``; returns the reference-star results plus ``chain``.

    Examples
    --------
    >>> result = run_demo("/tmp/ysoscale_demo", n_synthetic=300, workers=0)  # doctest: +SKIP
    >>> sorted(result["chain"])  # doctest: +SKIP
    ['rho_oph', 'synthetic']
    """
    result = reference_stars(out_dir, progress=progress)
    result["chain"] = run_chain(out_dir, n_synthetic=n_synthetic, workers=workers,
                                progress=progress)  # fmt: skip
    return result
