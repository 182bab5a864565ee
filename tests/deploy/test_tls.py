"""TLS: generated certificates, the shipped configuration, and a real encrypted cluster."""

from __future__ import annotations

import stat

import dask
import pytest
import yaml
from distributed import Client, LocalCluster, Security

from tests.deploy.conftest import DEPLOY
from ysoscale.cluster import join
from ysoscale.deploy import make_certificates, tls_security
from ysoscale.deploy.kubernetes import TLS_MOUNT, tls_env
from ysoscale.deploy.tls import ROLES, flatten, tls_config, tls_config_text


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"), hosts=("localhost", "scheduler"))


def test_certificates_and_config(certs):
    for role in ROLES:
        assert certs[f"{role}-cert"].read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert stat.S_IMODE(certs[f"{role}-key"].stat().st_mode) == 0o600
    assert stat.S_IMODE(certs["ca-key"].stat().st_mode) == 0o600
    security = tls_security(certs["config"])
    assert isinstance(security, Security)
    assert security.require_encryption is True
    assert security.tls_ca_file == str(certs["ca"].resolve())
    assert security.tls_worker_cert == str(certs["worker-cert"].resolve())
    assert security.tls_scheduler_key == str(certs["scheduler-key"].resolve())
    # building the Security object left the global configuration alone
    assert not dask.config.get("distributed.comm.require-encryption")


def test_shipped_config_is_the_kubernetes_layout():
    shipped = yaml.safe_load((DEPLOY / "tls" / "dask-tls.yaml").read_text())
    assert shipped == yaml.safe_load(tls_config_text(TLS_MOUNT))
    tls_config(DEPLOY / "tls" / "dask-tls.yaml")  # complete: CA, and cert + key per role


def test_kubernetes_env_sets_the_same_keys(certs, monkeypatch):
    # the DASK_* variables of the Pods mean what dask-tls.yaml means
    for role in ROLES:
        collected = dask.config.collect_env(tls_env(role))
        expected = {
            k: v
            for k, v in flatten(yaml.safe_load(tls_config_text(TLS_MOUNT))).items()
            if ".tls." not in k or k.endswith("ca-file") or f".tls.{role}." in k
        }
        with dask.config.set(flatten(collected)):
            for key, value in expected.items():
                assert dask.config.get(key) == value, key


def test_incomplete_config_is_refused(tmp_path):
    config = yaml.safe_load(tls_config_text("/x"))
    del config["distributed"]["comm"]["tls"]["worker"]["key"]
    path = tmp_path / "tls.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="worker.key"):
        tls_security(path)


def test_encrypted_cluster_admits_only_certified_clients(certs, tmp_path):
    security = tls_security(certs["config"])
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tls://",
        security=security,
        dashboard_address=None,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        # as `ysoscale infer --scheduler tls://...` connects: Security from dask's config
        with dask.config.set(flatten(yaml.safe_load(certs["config"].read_text()))):
            with Client(address, timeout="10s") as client:
                assert client.submit(sum, [1, 2]).result() == 3
        with pytest.raises(RuntimeError, match="no client certificate"):
            join(address)  # no certificate: distributed will not even try
        other = make_certificates(tmp_path / "other")  # signed by another CA
        with pytest.raises((OSError, TimeoutError)):
            join(address, security=tls_security(other["config"]), timeout="3s")
