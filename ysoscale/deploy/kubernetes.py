"""Kubernetes manifests for the dask-kubernetes operator, and their validation.

:func:`kubernetes_cluster_spec` starts from ``dask_kubernetes.operator.make_cluster_spec``
(the operator's own template) and makes it run ysoscale: the ``dask`` command line
(``dask-scheduler``/``dask-worker`` are no longer installed by distributed), GPU workers
with dask-cuda (``dask cuda worker``, one ``nvidia.com/gpu`` each), the shared data volume
mounted where the scheduled job writes, a ``ClusterIP`` scheduler Service, the scheduler's
HTTP API that the operator's autoscaling calls, and worker dashboards on loopback.
Settings come from ``deploy/kubernetes/cluster.yaml``; ``python -m ysoscale.deploy
kubernetes render`` writes ``deploy/kubernetes/manifests/10-daskcluster.yaml``.

:func:`validate_manifest` checks a manifest the way ``kubectl apply`` with strict field
validation would, without a cluster: DaskCluster and DaskAutoscaler against the CRD
schemas shipped with dask-kubernetes, built-in kinds against the Kubernetes client's
models (unknown fields, wrong types, missing required fields).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ysoscale.deploy.config import deploy_dir, load_yaml, require
from ysoscale.settings import reject_unknown_keys

DASK_API = "kubernetes.dask.org/v1"
TLS_MOUNT = "/etc/dask-tls"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class KubernetesSettings:
    """What the DaskCluster needs to know about this Kubernetes cluster.

    Parameters
    ----------
    name : str
        DaskCluster name; the scheduler Service is ``{name}-scheduler``.
    namespace : str
        Namespace of everything ysoscale creates.
    image : str
        The image built from ``deploy/Dockerfile`` and pushed where the nodes can pull it.
    image_pull_policy : str
    kind : {"gpu", "cpu"}
        Worker kind: dask-cuda workers with ``gpus_per_worker`` GPUs, or CPU workers.
    gpus_per_worker : int
        ``nvidia.com/gpu`` per worker Pod (dask-cuda runs one worker process per GPU).
    worker_cpu, worker_memory : str
        Requests = limits of each worker Pod (Kubernetes quantities).
    threads_per_worker : int
        Threads of each worker process.
    scheduler_cpu, scheduler_memory : str
        Requests = limits of the scheduler Pod.
    min_workers, max_workers : int
        The DaskAutoscaler's bounds; idle workers are released down to ``min_workers``.
    data_claim : str
        PersistentVolumeClaim (ReadWriteMany) holding inputs and outputs.
    data_path : str
        Where that claim is mounted in workers and in the scheduled job.
    tolerations : list of dict
        Tolerations of the worker Pods (GPU nodes are often tainted).
    node_selector : dict
        Node labels the worker Pods need.
    worker_dashboard_address : str
        Workers' dashboards; loopback unless told otherwise (``kubectl port-forward``
        reaches them).
    idle_timeout : int
        Seconds of scheduler idleness after which the operator deletes the cluster
        (0: never).
    tls_secret : str, optional
        A Secret with the files of ``make_certificates``; scheduler and workers then talk
        ``tls://`` only.
    run_as_user : int
        UID of every container (the image's ``ysoscale`` user); also the volume's fsGroup.

    Examples
    --------
    >>> KubernetesSettings(image="ysoscale:0.1.0").scheduler_address
    'tcp://ysoscale-scheduler.ysoscale.svc.cluster.local:8786'
    """

    image: str
    name: str = "ysoscale"
    namespace: str = "ysoscale"
    image_pull_policy: str = "IfNotPresent"
    kind: str = "gpu"
    gpus_per_worker: int = 1
    worker_cpu: str = "4"
    worker_memory: str = "32Gi"
    threads_per_worker: int = 1
    scheduler_cpu: str = "1"
    scheduler_memory: str = "4Gi"
    min_workers: int = 0
    max_workers: int = 4
    data_claim: str = "ysoscale-data"
    data_path: str = "/data"
    tolerations: tuple[dict[str, Any], ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    worker_dashboard_address: str = "127.0.0.1:8788"
    idle_timeout: int = 0
    tls_secret: str | None = None
    run_as_user: int = 1000

    def __post_init__(self) -> None:
        for name in ("name", "namespace", "data_claim"):
            if not NAME.match(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)!r} is not a Kubernetes name")
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"kind must be 'gpu' or 'cpu', got {self.kind!r}")
        if self.kind == "gpu" and self.gpus_per_worker < 1:
            raise ValueError("gpus_per_worker must be at least 1 for GPU workers")
        if not 0 <= self.min_workers <= self.max_workers or self.max_workers < 1:
            raise ValueError("need 0 <= min_workers <= max_workers and max_workers >= 1")
        if not self.data_path.startswith("/"):
            raise ValueError("data_path must be an absolute path")
        if not self.image:
            raise ValueError("image must be set")

    @property
    def scheduler_address(self) -> str:
        """The scheduler's address inside the Kubernetes cluster."""
        scheme = "tls" if self.tls_secret else "tcp"
        host = f"{self.name}-scheduler.{self.namespace}.svc.cluster.local"
        return f"{scheme}://{host}:8786"


def default_config() -> Path:
    """``deploy/kubernetes/cluster.yaml`` of the checkout (or of ``$YSOSCALE_DEPLOY_DIR``)."""
    return deploy_dir() / "kubernetes" / "cluster.yaml"


def kubernetes_settings(
    config: str | Path | Mapping[str, Any] | None = None, **overrides: Any
) -> KubernetesSettings:
    """Settings from ``config`` (default ``deploy/kubernetes/cluster.yaml``) and overrides.

    Examples
    --------
    >>> kubernetes_settings({"image": "ysoscale:0.1.0"}, max_workers=8).max_workers
    8
    """
    table = config if isinstance(config, Mapping) else load_yaml(config or default_config())
    values = dict(table or {})
    values.update(overrides)
    reject_unknown_keys(KubernetesSettings, values, "Kubernetes")
    values["tolerations"] = tuple(values.get("tolerations") or ())
    values["node_selector"] = dict(values.get("node_selector") or {})
    return KubernetesSettings(**values)


def _env(items: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in items.items()]


def tls_env(role: str) -> dict[str, str]:
    """Dask configuration, as environment variables, for TLS with the mounted Secret.

    Examples
    --------
    >>> tls_env("worker")["DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT"]
    '/etc/dask-tls/worker.pem'
    """
    prefix = "DASK_DISTRIBUTED__COMM__"
    return {
        f"{prefix}REQUIRE_ENCRYPTION": "True",
        f"{prefix}DEFAULT_SCHEME": "tls",
        f"{prefix}TLS__CA_FILE": f"{TLS_MOUNT}/ca.pem",
        f"{prefix}TLS__{role.upper()}__CERT": f"{TLS_MOUNT}/{role}.pem",
        f"{prefix}TLS__{role.upper()}__KEY": f"{TLS_MOUNT}/{role}-key.pem",
    }


def tls_volume(secret: str, role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (volume, volumeMount) pair that puts the CA and ``role``'s certificate and key
    from Secret ``secret`` at ``/etc/dask-tls`` (no Pod sees another role's key).

    Examples
    --------
    >>> volume, mount = tls_volume("ysoscale-dask-tls", "client")
    >>> [item["key"] for item in volume["secret"]["items"]], mount["mountPath"]
    (['ca.pem', 'client.pem', 'client-key.pem'], '/etc/dask-tls')
    """
    files = ["ca.pem", f"{role}.pem", f"{role}-key.pem"]
    items = [{"key": f, "path": f} for f in files]
    volume = {
        "name": "dask-tls",
        "secret": {"secretName": secret, "items": items, "defaultMode": 0o440},
    }
    return volume, {"name": "dask-tls", "mountPath": TLS_MOUNT, "readOnly": True}


def kubernetes_cluster_spec(
    config: str | Path | Mapping[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """The ``DaskCluster`` manifest (a dict) for ysoscale workers.

    Built with ``dask_kubernetes.operator.make_cluster_spec``, then adjusted as the module
    docstring says. Pass the settings file or :class:`KubernetesSettings` fields.

    Examples
    --------
    >>> spec = kubernetes_cluster_spec({"image": "ysoscale:0.1.0"})
    >>> spec["apiVersion"], spec["kind"]
    ('kubernetes.dask.org/v1', 'DaskCluster')
    >>> spec["spec"]["worker"]["spec"]["containers"][0]["args"][:3]
    ['dask', 'cuda', 'worker']
    """
    operator = require("dask_kubernetes.operator", "dask-kubernetes")
    s = kubernetes_settings(config, **overrides)
    gpu = s.kind == "gpu"
    worker_command = "dask cuda worker" if gpu else "dask worker"
    spec = operator.make_cluster_spec(
        name=s.name,
        image=s.image,
        n_workers=s.min_workers,
        worker_command=worker_command,
        scheduler_service_type="ClusterIP",
        idle_timeout=s.idle_timeout,
    )
    spec["metadata"]["namespace"] = s.namespace
    spec["metadata"]["labels"] = {"app.kubernetes.io/name": "ysoscale"}
    security = {"runAsNonRoot": True, "runAsUser": s.run_as_user, "fsGroup": s.run_as_user}

    scheduler_pod = spec["spec"]["scheduler"]["spec"]
    (scheduler,) = scheduler_pod["containers"]
    # The dashboard listens on the Pod's address: the operator scales and retires workers
    # through its HTTP API. Only the ClusterIP Service (and NetworkPolicy) expose it;
    # users reach it with kubectl port-forward.
    scheduler["args"] = ["dask", "scheduler", "--host", "0.0.0.0", "--dashboard-address", ":8787"]
    scheduler["env"] = _env({"DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": scheduler_routes()})
    scheduler["imagePullPolicy"] = s.image_pull_policy
    scheduler["resources"] = _resources(s.scheduler_cpu, s.scheduler_memory)
    scheduler_pod["securityContext"] = dict(security)

    worker_pod = spec["spec"]["worker"]["spec"]
    (worker,) = worker_pod["containers"]
    args = [a for a in worker["args"] if a != "--dashboard-address" and a != "8788"]
    worker["args"] = [
        *args,
        "--dashboard-address",
        s.worker_dashboard_address,
        "--nthreads",
        str(s.threads_per_worker),
        "--death-timeout",
        "120",
    ]
    worker.pop("ports", None)  # its dashboard listens on loopback only
    worker["imagePullPolicy"] = s.image_pull_policy
    worker["resources"] = _resources(s.worker_cpu, s.worker_memory, s.gpus_per_worker if gpu else 0)
    worker["env"] = _env({"OMP_NUM_THREADS": "1"})
    worker["volumeMounts"] = [{"name": "data", "mountPath": s.data_path}]
    worker_pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": s.data_claim}}]
    worker_pod["securityContext"] = dict(security)
    if s.tolerations:
        worker_pod["tolerations"] = [dict(t) for t in s.tolerations]
    if s.node_selector:
        worker_pod["nodeSelector"] = dict(s.node_selector)

    if s.tls_secret:
        # the dashboard (probes, the operator's scaling calls) stays plain HTTP
        volume, mount = tls_volume(s.tls_secret, "scheduler")
        scheduler["args"] += ["--protocol", "tls"]
        scheduler["env"] += _env(tls_env("scheduler"))
        scheduler_pod["volumes"] = [volume]
        scheduler["volumeMounts"] = [mount]
        volume, mount = tls_volume(s.tls_secret, "worker")
        worker["env"] += _env({**tls_env("worker"), "DASK_SCHEDULER_ADDRESS": s.scheduler_address})
        worker_pod["volumes"].append(volume)
        worker["volumeMounts"].append(mount)
    for container in (scheduler, worker):
        for key in [k for k, v in container.items() if v is None]:
            del container[key]  # make_cluster_spec leaves env: None
    return spec


def scheduler_routes() -> str:
    """The scheduler's HTTP routes with the API the operator scales workers through added
    (``distributed.http.scheduler.api`` is not served by default), as a dask config value.

    Examples
    --------
    >>> "distributed.http.scheduler.api" in scheduler_routes()
    True
    """
    import json

    import dask
    import distributed  # noqa: F401  (loads distributed's configuration defaults)

    routes = list(dask.config.get("distributed.scheduler.http.routes"))
    if "distributed.http.scheduler.api" not in routes:
        routes.append("distributed.http.scheduler.api")
    return json.dumps(routes)


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, dict[str, str]]:
    amounts = {"cpu": str(cpu), "memory": str(memory)}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def kubernetes_autoscaler_spec(
    config: str | Path | Mapping[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """The ``DaskAutoscaler`` that scales the DaskCluster's workers with its workload.

    Examples
    --------
    >>> kubernetes_autoscaler_spec({"image": "ysoscale:0.1.0"})["spec"]
    {'cluster': 'ysoscale', 'minimum': 0, 'maximum': 4}
    """
    s = kubernetes_settings(config, **overrides)
    return {
        "apiVersion": DASK_API,
        "kind": "DaskAutoscaler",
        "metadata": {"name": s.name, "namespace": s.namespace},
        "spec": {"cluster": s.name, "minimum": s.min_workers, "maximum": s.max_workers},
    }


def render_kubernetes(config: str | Path | Mapping[str, Any] | None = None) -> str:
    """The text of ``deploy/kubernetes/manifests/10-daskcluster.yaml``: the DaskCluster and
    its DaskAutoscaler.

    Examples
    --------
    >>> print(render_kubernetes({"image": "ysoscale:0.1.0"}).splitlines()[2])
    apiVersion: kubernetes.dask.org/v1
    """
    from ysoscale.deploy.config import dump_yaml_documents

    header = (
        "# Generated by `python -m ysoscale.deploy kubernetes render` from\n"
        "# deploy/kubernetes/cluster.yaml: edit that file and render again.\n"
    )
    docs = [kubernetes_cluster_spec(config), kubernetes_autoscaler_spec(config)]
    return dump_yaml_documents(docs, header)


# ---------------------------------------------------------------------------- validation


class ManifestError(ValueError):
    """A manifest that ``kubectl apply`` (strict field validation) would refuse."""


@cache
def _crd_schema(kind: str) -> dict[str, Any]:
    import dask_kubernetes.operator as operator

    crds = Path(operator.__file__).parent / "deployment/helm/dask-kubernetes-operator/crds"
    crd = load_yaml(crds / f"{kind.lower()}.yaml")
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema: Any) -> Any:
    """A copy of an OpenAPI schema where objects with listed properties refuse others."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _check_model(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    """Walk ``value`` along the Kubernetes client's model ``type_name``."""
    import kubernetes.client as k8s

    if type_name.startswith("List["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            _check_model(item, type_name[5:-1], f"{path}[{i}]", errors)
        return
    if type_name.startswith("Dict["):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping")
            return
        inner = type_name[5:-1].split(",", 1)[1].strip()
        for key, item in value.items():
            _check_model(item, inner, f"{path}.{key}", errors)
        return
    model = getattr(k8s, type_name, None)
    if model is None:
        return  # str, int, bool, object (int-or-string), datetime: checked by the models
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a mapping ({type_name})")
        return
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            errors.append(f"{path}: unknown field {key!r} of {type_name}")
        elif item is not None:
            _check_model(item, model.openapi_types[by_json[key]], f"{path}.{key}", errors)


def validate_manifest(doc: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestError` if ``kubectl apply`` would refuse this document.

    Checks ``apiVersion``/``kind``/``metadata.name``; the dask-kubernetes kinds against
    their CRD schema (unknown fields refused, as ``kubectl --validate=strict`` does),
    built-in kinds against the Kubernetes client's model of ``apiVersion``/``kind``.

    Examples
    --------
    >>> validate_manifest({"apiVersion": "v1", "kind": "ConfigMap",
    ...                    "metadata": {"name": "x"}, "data": {"a": "b"}})
    >>> validate_manifest({"apiVersion": "v1", "kind": "ConfigMap",
    ...                    "metadata": {"name": "x"}, "dta": {}})
    Traceback (most recent call last):
    ysoscale.deploy.kubernetes.ManifestError: ConfigMap x: ...unknown field 'dta' of V1ConfigMap
    """
    api, kind = doc.get("apiVersion"), doc.get("kind")
    meta = doc.get("metadata") or {}
    label = f"{kind} {meta.get('name', '?')}"
    if not api or not kind:
        raise ManifestError(f"{label}: apiVersion and kind are required")
    if not meta.get("name") or not NAME.match(str(meta["name"])):
        raise ManifestError(f"{label}: metadata.name must be a Kubernetes name")
    errors: list[str] = []
    _check_model(dict(meta), "V1ObjectMeta", "metadata", errors)
    if api == DASK_API:
        jsonschema = require("jsonschema", "jsonschema")
        try:
            schema = _crd_schema(kind)
        except FileNotFoundError as error:
            raise ManifestError(f"{label}: {kind} is not a dask-kubernetes kind") from error
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        validator = jsonschema.Draft7Validator(schema)
        for error in sorted(validator.iter_errors(body), key=lambda e: list(e.path)):
            where = ".".join(map(str, error.path)) or "(top)"
            errors.append(f"{where}: {error.message}")
    else:
        group_version = api.split("/")[-1]
        model_name = f"{group_version.capitalize()}{kind}"
        import kubernetes.client as k8s

        model = getattr(k8s, model_name, None)
        if model is None:
            raise ManifestError(f"{label}: no Kubernetes model for {api} {kind}")
        _check_model(dict(doc), model_name, kind, errors)
        if not errors:
            try:
                model.from_dict(copy.deepcopy(dict(doc)))
            except Exception as error:  # pydantic's ValidationError: types, required fields
                errors.append(str(error).replace("\n", " "))
    if errors:
        raise ManifestError(f"{label}: " + "; ".join(errors))


def validate_file(path: str | Path) -> list[dict[str, Any]]:
    """Validate every document of a manifest file; return the documents.

    Examples
    --------
    >>> path = deploy_dir() / "kubernetes" / "manifests" / "20-cronjob.yaml"
    >>> [doc["kind"] for doc in validate_file(path)]  # doctest: +SKIP
    ['ConfigMap', 'CronJob']
    """
    from ysoscale.deploy.config import load_yaml_documents

    docs = load_yaml_documents(path)
    for doc in docs:
        validate_manifest(doc)
    return docs
