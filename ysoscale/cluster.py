"""The one place that creates or connects to a Dask cluster.

``connect(workers=N)`` starts a LocalCluster with N single-threaded worker processes on
this machine; ``connect(scheduler="tcp://host:8786")`` joins an existing cluster (one
started by dask-jobqueue or dask-kubernetes from ``deploy/``). GPU clusters
(dask-cuda's LocalCUDACluster) are imported lazily, only when asked for.

A local cluster's scheduler and dashboard listen on 127.0.0.1 only: on a shared login
node nobody else can reach them (open the dashboard through ``ssh -L``). Pass
``dashboard_address`` to serve the dashboard elsewhere.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from distributed import Client


@contextlib.contextmanager
def connect(
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    gpu: bool = False,
    memory_limit: str = "auto",
    dashboard_address: str = "127.0.0.1:0",
) -> Iterator[Client]:
    """Yield a ``distributed.Client``; a local cluster is closed on exit.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a new LocalCluster (default: one per core).
    scheduler : str, optional
        Address of a running scheduler; takes precedence over ``workers``.
    gpu : bool
        Start a LocalCUDACluster (one worker per GPU) instead; needs ``ysoscale[gpu]``.
    dashboard_address : str
        Where a local cluster serves its dashboard: ``host:port``, port 0 for any free
        port. The default keeps it on this machine's loopback interface.

    Examples
    --------
    >>> with connect(workers=1) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    if scheduler:
        client = join(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    if gpu:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as error:  # pragma: no cover - needs the gpu extra
            raise RuntimeError("--gpu needs the GPU extra: pip install 'ysoscale[gpu]'") from error
        cluster = LocalCUDACluster(dashboard_address=dashboard_address)
    else:
        import dask
        from distributed import LocalCluster

        # Dask's default MALLOC_TRIM_THRESHOLD_ for workers switches off glibc's dynamic
        # mmap threshold, so every large array is a fresh mmap with page faults: the
        # simulator runs ~1.7x slower. Workers here allocate in steady, large blocks.
        unset_trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        with dask.config.set(unset_trim):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=memory_limit,
                dashboard_address=dashboard_address,
            )
    client = Client(cluster)
    print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def join(address: str, **client_kwargs) -> Client:
    """A ``Client`` of the running scheduler at ``address``.

    ``distributed.Client`` makes itself dask's default scheduler before it connects and
    does not undo that when connecting fails, so every later ``.compute()`` in the
    session would ask for a client that does not exist. Here a failed connection leaves
    dask's configuration as it was, and a ``tls://`` address without certificates gets
    an error that says what to configure.

    Parameters
    ----------
    address
        The scheduler's address, e.g. ``tcp://10.0.0.5:8786``.
    **client_kwargs
        Passed to ``distributed.Client`` (``security=``, ``timeout=`` ...).

    Raises
    ------
    RuntimeError
        If ``address`` is ``tls://`` and dask's configuration holds no TLS certificates.

    Examples
    --------
    >>> import dask
    >>> join("tls://127.0.0.1:1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    RuntimeError: tls://127.0.0.1:1 is a TLS scheduler ...
    >>> dask.config.get("scheduler", None) is None
    True
    """
    import dask

    unset = object()
    before = dask.config.config.get("scheduler", unset)
    try:
        return Client(address, **client_kwargs)
    except BaseException as error:
        if before is unset:
            dask.config.config.pop("scheduler", None)
        else:
            dask.config.config["scheduler"] = before
        if isinstance(error, TypeError) and address.startswith("tls://"):
            raise RuntimeError(
                f"{address} is a TLS scheduler but dask's configuration has no client "
                "certificate: set distributed.comm.tls (ca-file, client.cert, client.key), "
                "e.g. DASK_CONFIG=deploy/tls/dask-tls.yaml (see deploy/README.md)"
            ) from error
        raise
