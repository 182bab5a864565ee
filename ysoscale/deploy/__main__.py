"""``python -m ysoscale.deploy``: start a SLURM cluster, render and check templates.

Commands
--------
``slurm script [--kind K] [--config F] [--set KEY=VALUE ...]``
    print the job script each SLURM job will run (nothing is submitted)
``slurm start --jobs N [--kind K] [--config F] [--set ...] [--address-file F]``
    start the scheduler here, submit N worker jobs, print the scheduler address, and
    keep the cluster up until interrupted (Ctrl-C)
``kubernetes render [--config F] [--out F]``
    write the DaskCluster + DaskAutoscaler manifest from ``deploy/kubernetes/cluster.yaml``
``check FILE [FILE ...]``
    validate Kubernetes manifests without a cluster
``tls certs DIR [--host H ...] [--days N]``
    write a private CA, scheduler/worker/client certificates and ``DIR/dask-tls.yaml``
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Any


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from ysoscale.deploy.config import require

    yaml = require("yaml", "PyYAML")
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _slurm_script(args: argparse.Namespace) -> int:
    from ysoscale.deploy.slurm import slurm_cluster

    with slurm_cluster(args.kind, args.config, **_overrides(args.set)) as cluster:
        print(cluster.job_script())
    return 0


def _slurm_start(args: argparse.Namespace) -> int:
    from distributed import Client

    from ysoscale.deploy.slurm import slurm_cluster

    cluster = slurm_cluster(args.kind, args.config, **_overrides(args.set))
    try:
        cluster.scale(jobs=args.jobs)
        address = cluster.scheduler_address
        if args.address_file:
            Path(args.address_file).write_text(address + "\n")
        port = cluster.dashboard_link.split(":")[-1].split("/")[0]
        print(f"scheduler: {address}")
        # the link names the scheduler's host; the dashboard itself listens where
        # dashboard_address says (127.0.0.1 by default): reach it through ssh
        print(f"dashboard: http://127.0.0.1:{port}/status on {socket.getfqdn()}")
        print(f"  from your laptop: ssh -N -L {port}:127.0.0.1:{port} {socket.getfqdn()}")
        print(f"run: ysoscale infer INPUT --out OUT --scheduler {address}", end="")
        print(" --gpu" if args.kind == "gpu" else "")
        print(f"{args.jobs} job(s) submitted; Ctrl-C stops the cluster and cancels them")
        sys.stdout.flush()
        with Client(cluster) as client:
            while True:
                time.sleep(30)
                workers = len(client.scheduler_info(n_workers=-1)["workers"])
                print(f"{time.strftime('%H:%M:%S')} workers connected: {workers}", flush=True)
    except KeyboardInterrupt:
        print("stopping the cluster", file=sys.stderr)
    finally:
        cluster.close()
    return 0


def _kubernetes_render(args: argparse.Namespace) -> int:
    from ysoscale.deploy.kubernetes import render_kubernetes

    text = render_kubernetes(args.config)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ysoscale.deploy.kubernetes import ManifestError, validate_file

    failed = 0
    for path in args.files:
        try:
            docs = validate_file(path)
            print(f"{path}: ok ({', '.join(d['kind'] for d in docs)})")
        except ManifestError as error:
            failed += 1
            print(f"{path}: {error}", file=sys.stderr)
    return 1 if failed else 0


def _certs(args: argparse.Namespace) -> int:
    from ysoscale.deploy.tls import make_certificates

    paths = make_certificates(args.directory, tuple(args.host or ["localhost"]), args.days)
    for name, path in paths.items():
        print(f"{name:16} {path}")
    print(f"use it with: export DASK_CONFIG={Path(args.directory).resolve()}")
    return 0


def build_parser(prog: str = "python -m ysoscale.deploy") -> argparse.ArgumentParser:
    """The argument parser of ``python -m ysoscale.deploy`` (also ``ysoscale deploy``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    slurm = sub.add_parser("slurm", help="SLURM clusters (dask-jobqueue)")
    slurm_sub = slurm.add_subparsers(dest="action", required=True)
    for name, func, text in (
        ("script", _slurm_script, "print a worker job script"),
        ("start", _slurm_start, "start a cluster and keep it up"),
    ):
        p = slurm_sub.add_parser(name, help=text)
        p.add_argument("--kind", choices=["cpu", "gpu"], default="cpu")
        p.add_argument("--config", help="SLURM settings (default deploy/slurm/cluster.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting, e.g. --set account=astro")  # fmt: skip
        p.set_defaults(func=func)
        if name == "start":
            p.add_argument("--jobs", type=int, required=True, help="worker jobs to submit")
            p.add_argument("--address-file", help="write the scheduler address here")

    kube = sub.add_parser("kubernetes", help="Kubernetes manifests (dask-kubernetes)")
    kube_sub = kube.add_subparsers(dest="action", required=True)
    render = kube_sub.add_parser("render", help="DaskCluster + DaskAutoscaler manifest")
    render.add_argument("--config", help="settings (default deploy/kubernetes/cluster.yaml)")
    render.add_argument("--out", help="write here instead of standard output")
    render.set_defaults(func=_kubernetes_render)

    check = sub.add_parser("check", help="validate Kubernetes manifests (no cluster needed)")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=_check)

    tls = sub.add_parser("tls", help="TLS certificates for scheduler, workers and clients")
    tls_sub = tls.add_subparsers(dest="action", required=True)
    certs = tls_sub.add_parser("certs", help="write a CA, role certificates and dask-tls.yaml")
    certs.add_argument("directory")
    certs.add_argument("--host", action="append", help="host name to label (repeatable)")
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(func=_certs)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m ysoscale.deploy") -> int:
    """Run ``python -m ysoscale.deploy`` with ``argv``.

    Examples
    --------
    >>> main(["tls", "certs", "/tmp/ysoscale-tls-example"])  # doctest: +SKIP
    0
    """
    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
