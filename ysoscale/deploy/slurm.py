"""SLURM clusters from ``deploy/slurm/cluster.yaml``, through dask-jobqueue.

The YAML file has a ``common`` table and one table per worker kind (``cpu``, ``gpu``);
a kind's settings are ``common`` updated by its own table, then by keyword overrides.
Each SLURM job of a CPU cluster runs ``worker_processes`` single-threaded Dask workers
(``dask worker``); each job of a GPU cluster runs dask-cuda's worker (``dask cuda
worker``, as ``python -m dask_cuda.cli``), which starts one worker per GPU it is given.
The scheduler runs in the Python process that builds the cluster (on the login node);
its dashboard listens on 127.0.0.1 unless ``dashboard_address`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ysoscale.deploy.config import deploy_dir, load_yaml, require
from ysoscale.settings import reject_unknown_keys

KINDS = ("cpu", "gpu")
WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")
CPU_WORKER = "distributed.cli.dask_worker"
GPU_WORKER = "dask_cuda.cli"  # ``python -m dask_cuda.cli`` is dask-cuda's ``dask cuda worker``


@dataclass(frozen=True)
class SlurmSettings:
    """One worker kind's SLURM job and Dask worker settings.

    Parameters
    ----------
    kind : {"cpu", "gpu"}
        CPU workers (``dask worker``) or GPU workers (dask-cuda).
    partition : str
        SLURM partition (``#SBATCH -p``).
    account : str, optional
        SLURM account to charge (``#SBATCH -A``); omitted when None.
    walltime : str
        Job time limit, ``[D-]HH:MM[:SS]``.
    worker_processes : int
        Dask worker processes per job (CPU); must be 1 for GPU jobs, where dask-cuda
        starts one process per GPU.
    threads_per_worker : int
        Threads of each worker process.
    cpus_per_job : int, optional
        ``--cpus-per-task`` of the job; default ``worker_processes * threads_per_worker``.
    memory : str
        Memory of the whole job (``--mem``), shared by its workers.
    gpus : int
        GPUs per job (0 for CPU jobs); requested as ``--gres=gpu:N`` unless ``gres``.
    gres : str, optional
        Explicit ``--gres`` value, e.g. ``gpu:a100:2`` (must match ``gpus``).
    activate : list of str
        Shell lines that make the ysoscale environment available in the job
        (``module load ...``, ``source .../bin/activate``).
    cache_dir : str, optional
        ``YSOSCALE_CACHE_DIR`` of the workers: a shared directory with the built grids.
    local_directory : str, optional
        Node-local scratch for worker spill files (``$TMPDIR`` is expanded in the job).
    log_directory : str, optional
        Where the jobs' stdout/stderr go.
    interface : str, optional
        Network interface of scheduler and workers (``ib0``); default: the host name's.
    dashboard_address : str
        Scheduler dashboard; the default is reachable only from the login node itself.
    worker_dashboard_address : str
        Workers' dashboards (on the compute nodes), loopback by default.
    job_extra : list of str
        More ``#SBATCH`` directives, e.g. ``--qos=long`` or ``--constraint=a100``.
    death_timeout : int
        Seconds a worker waits for a lost scheduler before it exits.
    tls_config : str, optional
        A dask TLS configuration file (``deploy/tls/dask-tls.yaml``): scheduler and
        workers then talk ``tls://`` with those certificates.

    Examples
    --------
    >>> SlurmSettings(kind="gpu", partition="gpu", gpus=2).gres_value
    'gpu:2'
    """

    kind: str
    partition: str
    account: str | None = None
    walltime: str = "04:00:00"
    worker_processes: int = 1
    threads_per_worker: int = 1
    cpus_per_job: int | None = None
    memory: str = "16GB"
    gpus: int = 0
    gres: str | None = None
    activate: tuple[str, ...] = ()
    cache_dir: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    dashboard_address: str = "127.0.0.1:8787"
    worker_dashboard_address: str = "127.0.0.1:0"
    job_extra: tuple[str, ...] = ()
    death_timeout: int = 120
    tls_config: str | None = None

    def __post_init__(self) -> None:
        from dask.utils import parse_bytes

        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.partition:
            raise ValueError(f"{self.kind}: partition must be set")
        if not WALLTIME.match(str(self.walltime)):
            raise ValueError(f"{self.kind}: walltime {self.walltime!r} is not [D-]HH:MM[:SS]")
        for name in ("worker_processes", "threads_per_worker", "death_timeout"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{self.kind}: {name} must be at least 1")
        if self.cpus_per_job is not None and self.cpus_per_job < 1:
            raise ValueError(f"{self.kind}: cpus_per_job must be at least 1")
        parse_bytes(self.memory)  # raises on a malformed size
        if self.kind == "gpu":
            if self.gpus < 1:
                raise ValueError("gpu: gpus must be at least 1")
            if self.worker_processes != 1:
                raise ValueError(
                    "gpu: worker_processes must be 1 (dask-cuda starts one worker per GPU)"
                )
        elif self.gpus or self.gres:
            raise ValueError("cpu: gpus and gres must be unset (use the gpu kind)")
        for name in ("activate", "job_extra"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{self.kind}: {name} must be a list of strings")

    @property
    def gres_value(self) -> str | None:
        """The ``--gres`` request, or None for CPU jobs."""
        if self.kind != "gpu":
            return None
        return self.gres or f"gpu:{self.gpus}"

    @property
    def worker_memory(self) -> int:
        """Bytes of memory each Dask worker process may use before spilling."""
        from dask.utils import parse_bytes

        per_job = parse_bytes(self.memory)
        return per_job // (self.gpus if self.kind == "gpu" else self.worker_processes)


def default_config() -> Path:
    """``deploy/slurm/cluster.yaml`` of the checkout (or of ``$YSOSCALE_DEPLOY_DIR``)."""
    return deploy_dir() / "slurm" / "cluster.yaml"


def slurm_settings(
    kind: str = "cpu", config: str | Path | Mapping[str, Any] | None = None, **overrides: Any
) -> SlurmSettings:
    """Read one kind's settings: ``common``, then the kind's table, then ``overrides``.

    Parameters
    ----------
    kind : {"cpu", "gpu"}
    config : path or mapping, optional
        The YAML file (default ``deploy/slurm/cluster.yaml``) or its parsed content.
    **overrides
        Any :class:`SlurmSettings` field.

    Raises
    ------
    ValueError
        On an unknown kind or setting (naming the closest known one) or a bad value.

    Examples
    --------
    >>> table = {"common": {"walltime": "01:00:00"}, "gpu": {"partition": "gpu", "gpus": 1}}
    >>> slurm_settings("gpu", table, account="astro").account
    'astro'
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    table = config if isinstance(config, Mapping) else load_yaml(config or default_config())
    if not isinstance(table, Mapping):
        raise ValueError("the SLURM configuration must be a mapping of tables")
    unknown = sorted(set(table) - {"common", *KINDS})
    if unknown:
        raise ValueError(f"unknown table(s) {unknown} in the SLURM configuration")
    values: dict[str, Any] = {}
    for part in (table.get("common") or {}, table.get(kind) or {}, overrides):
        reject_unknown_keys(SlurmSettings, part, f"SLURM {kind}")
        values.update(part)
    values["kind"] = kind
    for name in ("activate", "job_extra"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    if "partition" not in values:
        raise ValueError(f"SLURM {kind}: partition must be set")
    return SlurmSettings(**values)


def cluster_kwargs(settings: SlurmSettings) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for ``settings``.

    Examples
    --------
    >>> kw = cluster_kwargs(SlurmSettings(kind="cpu", partition="short", worker_processes=4))
    >>> kw["queue"], kw["processes"], kw["cores"]
    ('short', 4, 4)
    """
    from dask.utils import format_bytes

    gpu = settings.kind == "gpu"
    prologue = list(settings.activate)
    if settings.cache_dir:
        prologue.append(f"export YSOSCALE_CACHE_DIR={settings.cache_dir}")
    prologue.append("export OMP_NUM_THREADS=1")  # parallelism comes from Dask, not BLAS
    extra_args = ["--dashboard-address", settings.worker_dashboard_address]
    directives = list(settings.job_extra)
    if gpu:
        directives.append(f"--gres={settings.gres_value}")
    processes = settings.worker_processes
    kwargs: dict[str, Any] = {
        "queue": settings.partition,
        "account": settings.account,
        "walltime": settings.walltime,
        # dask-jobqueue gives each worker process cores / processes threads
        "cores": processes * settings.threads_per_worker,
        "processes": processes,
        "job_cpu": settings.cpus_per_job,
        "job_script_prologue": prologue,
        "job_extra_directives": directives,
        "worker_extra_args": extra_args,
        "death_timeout": settings.death_timeout,
        "local_directory": settings.local_directory,
        "log_directory": settings.log_directory,
        "interface": settings.interface,
        "job_name": f"ysoscale-{settings.kind}",
        "scheduler_options": {"dashboard_address": settings.dashboard_address},
    }
    if gpu:
        # --memory-limit is per worker process: dask-cuda starts one per GPU, so the job's
        # memory is split between them while --mem still asks SLURM for all of it
        kwargs["memory"] = format_bytes(settings.worker_memory).replace(" ", "")
        kwargs["job_mem"] = _slurm_bytes(settings.memory)
        kwargs["worker_command"] = GPU_WORKER
    else:
        kwargs["memory"] = settings.memory
        kwargs["worker_command"] = CPU_WORKER
    if settings.tls_config:
        from ysoscale.deploy.tls import tls_security

        kwargs["security"] = tls_security(settings.tls_config)
        kwargs["protocol"] = "tls://"
    return kwargs


def _slurm_bytes(size: str) -> str:
    from dask.utils import parse_bytes

    slurm = require("dask_jobqueue.slurm", "dask-jobqueue")
    return slurm.slurm_format_bytes_ceil(parse_bytes(size))


def slurm_cluster(
    kind: str = "cpu",
    config: str | Path | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` of ``kind`` workers, from the shipped template.

    The scheduler starts in this process; no job is submitted until
    ``cluster.scale(jobs=N)`` (or ``cluster.adapt``). ``cluster.job_script()`` shows what
    each job will run.

    Parameters
    ----------
    kind : {"cpu", "gpu"}
    config : path or mapping, optional
        Default ``deploy/slurm/cluster.yaml``.
    **overrides
        :class:`SlurmSettings` fields, e.g. ``account="astro"``, ``walltime="08:00:00"``.

    Returns
    -------
    dask_jobqueue.SLURMCluster

    Examples
    --------
    >>> cluster = slurm_cluster("gpu", account="astro")  # doctest: +SKIP
    >>> print(cluster.job_script())                      # doctest: +SKIP
    >>> cluster.scale(jobs=4)                            # doctest: +SKIP
    >>> cluster.scheduler_address                        # doctest: +SKIP
    'tcp://10.1.2.3:41234'
    """
    jobqueue = require("dask_jobqueue", "dask-jobqueue")
    settings = slurm_settings(kind, config, **overrides)
    return jobqueue.SLURMCluster(**cluster_kwargs(settings))


def settings_dict(settings: SlurmSettings) -> dict[str, Any]:
    """The settings as a plain dict (for printing).

    Examples
    --------
    >>> settings_dict(SlurmSettings(kind="cpu", partition="short"))["partition"]
    'short'
    """
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
