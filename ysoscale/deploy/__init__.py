"""Deployment on SLURM (dask-jobqueue) and Kubernetes (dask-kubernetes operator).

Builds clusters and manifests from the templates users edit in the repository's
``deploy/`` folder; see ``deploy/README.md``. Needs ``pip install 'ysoscale[deploy]'``;
nothing here is imported by the rest of ysoscale.
"""

from ysoscale.deploy.config import deploy_dir
from ysoscale.deploy.kubernetes import (
    KubernetesSettings,
    ManifestError,
    kubernetes_autoscaler_spec,
    kubernetes_cluster_spec,
    kubernetes_settings,
    render_kubernetes,
    validate_file,
    validate_manifest,
)
from ysoscale.deploy.slurm import SlurmSettings, slurm_cluster, slurm_settings
from ysoscale.deploy.tls import make_certificates, tls_security

__all__ = [
    "KubernetesSettings",
    "ManifestError",
    "SlurmSettings",
    "deploy_dir",
    "kubernetes_autoscaler_spec",
    "kubernetes_cluster_spec",
    "kubernetes_settings",
    "make_certificates",
    "render_kubernetes",
    "slurm_cluster",
    "slurm_settings",
    "tls_security",
    "validate_file",
    "validate_manifest",
]
