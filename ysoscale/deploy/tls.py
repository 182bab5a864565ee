"""TLS between scheduler, workers and clients: certificates and ``Security`` objects.

Dask reads TLS settings from its configuration (``distributed.comm.tls``, see
``deploy/tls/dask-tls.yaml``): a CA file, and a certificate and key for each role
(scheduler, worker, client). With ``distributed.comm.require-encryption`` every
connection must be ``tls://`` and both ends must hold a certificate signed by the CA.
:func:`make_certificates` writes such a set (a private CA, one key pair per role) for a
cluster that has no site certificates.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ysoscale.deploy.config import load_yaml, require

ROLES = ("scheduler", "worker", "client")


def tls_config(path: str | Path) -> dict[str, Any]:
    """The dask configuration in ``path``, checked to be a complete TLS setup.

    Raises
    ------
    ValueError
        If the CA file or a role's certificate or key is not configured.

    Examples
    --------
    >>> tls_config("deploy/tls/dask-tls.yaml")["distributed"]["comm"]["require-encryption"]
    ... # doctest: +SKIP
    True
    """
    config = load_yaml(path) or {}
    tls = config.get("distributed", {}).get("comm", {}).get("tls", {})
    missing = [] if tls.get("ca-file") else ["ca-file"]
    for role in ROLES:
        missing += [f"{role}.{k}" for k in ("cert", "key") if not (tls.get(role) or {}).get(k)]
    if missing:
        raise ValueError(f"{path}: distributed.comm.tls lacks {', '.join(missing)}")
    return config


def tls_security(path: str | Path) -> Any:
    """A ``distributed.Security`` built from the dask TLS configuration file ``path``.

    Examples
    --------
    >>> security = tls_security("deploy/tls/dask-tls.yaml")  # doctest: +SKIP
    >>> security.require_encryption                         # doctest: +SKIP
    True
    """
    import dask
    from distributed import Security

    with dask.config.set(flatten(tls_config(path))):
        return Security()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested configuration, for ``dask.config.set`` (which would replace
    a whole top-level table given as a nested mapping).

    Examples
    --------
    >>> flatten({"distributed": {"comm": {"require-encryption": True}}})
    {'distributed.comm.require-encryption': True}
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def make_certificates(
    directory: str | Path,
    hosts: tuple[str, ...] = ("localhost",),
    days: int = 365,
) -> dict[str, Path]:
    """Write a private CA and a certificate + key for each role into ``directory``.

    Files: ``ca.pem`` (give it to everyone), ``ca-key.pem`` (keep it; it signs more
    certificates), ``{role}.pem`` and ``{role}-key.pem`` for scheduler, worker and client,
    and ``dask-tls.yaml``, the dask configuration that uses them (absolute paths; point
    ``DASK_CONFIG`` at ``directory`` to use it). Keys are written readable by their owner
    only. Dask checks that a peer's certificate is signed by the CA, not its host name;
    ``hosts`` only label the certificates.

    Returns
    -------
    dict
        File paths by name: ``ca``, ``ca-key``, ``{role}-cert``, ``{role}-key``, ``config``.

    Examples
    --------
    >>> import tempfile
    >>> paths = make_certificates(tempfile.mkdtemp())
    >>> sorted(paths)[:3]
    ['ca', 'ca-key', 'client-cert']
    """
    x509 = require("cryptography.x509", "cryptography")
    hashes = require("cryptography.hazmat.primitives.hashes", "cryptography")
    serialization = require("cryptography.hazmat.primitives.serialization", "cryptography")
    ec = require("cryptography.hazmat.primitives.asymmetric.ec", "cryptography")
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days))

    def name(common: str) -> Any:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ysoscale"),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )

    def write_key(key: Any, path: Path) -> None:
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("ysoscale dask CA"))
        .issuer_name(name("ysoscale dask CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "ca-key": directory / "ca-key.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_key(ca_key, paths["ca-key"])
    san = x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts])
    usage = x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"ysoscale dask {role}"))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(san, critical=False)
            .add_extension(usage, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        paths[f"{role}-cert"] = directory / f"{role}.pem"
        paths[f"{role}-key"] = directory / f"{role}-key.pem"
        paths[f"{role}-cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, paths[f"{role}-key"])
    paths["config"] = directory / "dask-tls.yaml"
    paths["config"].write_text(tls_config_text(directory.resolve()))
    return paths


def tls_config_text(directory: str | Path) -> str:
    """The dask TLS configuration (YAML) for the files :func:`make_certificates` writes.

    Examples
    --------
    >>> print(tls_config_text("/etc/dask-tls").splitlines()[5])
          ca-file: /etc/dask-tls/ca.pem
    """
    yaml = require("yaml", "PyYAML")
    directory = Path(directory)
    tls: dict[str, Any] = {"ca-file": str(directory / "ca.pem")}
    for role in ROLES:
        tls[role] = {
            "cert": str(directory / f"{role}.pem"),
            "key": str(directory / f"{role}-key.pem"),
        }
    config = {
        "distributed": {
            "comm": {"default-scheme": "tls", "require-encryption": True, "tls": tls},
        }
    }
    return yaml.safe_dump(config, sort_keys=False)
