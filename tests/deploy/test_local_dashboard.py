"""ysoscale.cluster.connect: a local cluster's dashboard listens on loopback unless told."""

from __future__ import annotations

import psutil

from ysoscale.cluster import connect


def dashboard_hosts(client) -> set[str]:
    port = client.cluster.scheduler.http_server.port
    sockets = psutil.Process().net_connections(kind="tcp")
    return {s.laddr.ip for s in sockets if s.status == "LISTEN" and s.laddr.port == port}


def test_dashboard_on_loopback_by_default():
    with connect(workers=0) as client:
        assert dashboard_hosts(client) == {"127.0.0.1"}
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")


def test_dashboard_elsewhere_when_told():
    with connect(workers=0, dashboard_address=":0") as client:
        assert dashboard_hosts(client) - {"127.0.0.1"}
