"""kube-controllers' configuration: the environment merged with KubeControllersConfiguration.

What it is: Calico's rules (``kube-controllers/pkg/config/{config,runconfig}.go``) as pure
functions.  ``EnvConfig.from_env`` reads the process settings (``LOG_LEVEL``, ``KUBECONFIG``,
``DATASTORE_TYPE``) and remembers which of Calico's override variables are set;
``default_configuration()`` is the ``default`` resource Calico creates when there is none;
``merge_config(env, spec)`` is the running configuration plus the ``status`` Calico writes back
(``runningConfig`` and ``environmentVars``).

Calico's precedence, followed here:

* An environment variable, when set, wins over the resource: ``LOG_LEVEL`` over
  ``logSeverityScreen``, ``ENABLED_CONTROLLERS`` over which ``controllers`` entries exist,
  ``RECONCILER_PERIOD`` over every controller's ``reconcilerPeriod``, ``COMPACTION_PERIOD``
  over ``etcdV3CompactionPeriod``, ``HEALTH_ENABLED`` over ``healthChecks``,
  ``SYNC_NODE_LABELS`` over ``node.syncLabels``, ``AUTO_HOST_ENDPOINTS`` over
  ``node.hostEndpoint.autoCreate``.  Each one used is listed in ``status.environmentVars``.
* Without ``ENABLED_CONTROLLERS`` a controller runs iff its ``controllers`` entry exists (the
  default resource has node, policy, workloadEndpoint, serviceAccount and namespace).
* ``prometheusMetricsPort`` and ``leakGracePeriod`` come from the resource only; an unset
  port means no metrics server (as Calico on etcd).

What it is not: the reading and writing of the resource (``runconfig``), nor logging setup.
Invariants: a bad environment value raises ``ConfigError`` naming the variable (Calico exits
fatally there too); a bad or missing resource value falls back to Calico's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.model.fields import format_go_duration, parse_go_duration
from pycalico.model.node import KubeControllersConfiguration

ENV_LOG_LEVEL = "LOG_LEVEL"
ENV_RECONCILER_PERIOD = "RECONCILER_PERIOD"
ENV_ENABLED_CONTROLLERS = "ENABLED_CONTROLLERS"
ENV_COMPACTION_PERIOD = "COMPACTION_PERIOD"
ENV_HEALTH_ENABLED = "HEALTH_ENABLED"
ENV_SYNC_NODE_LABELS = "SYNC_NODE_LABELS"
ENV_AUTO_HOST_ENDPOINTS = "AUTO_HOST_ENDPOINTS"
ALL_ENVS = (
    ENV_LOG_LEVEL,
    ENV_RECONCILER_PERIOD,
    ENV_ENABLED_CONTROLLERS,
    ENV_COMPACTION_PERIOD,
    ENV_HEALTH_ENABLED,
    ENV_SYNC_NODE_LABELS,
    ENV_AUTO_HOST_ENDPOINTS,
)

DEFAULT_NAME = "default"
DEFAULT_ENABLED_CONTROLLERS = "node,policy,namespace,serviceaccount,workloadendpoint"
DEFAULT_RECONCILER_PERIOD = 300.0
DEFAULT_COMPACTION_PERIOD = 600.0
DEFAULT_LEAK_GRACE_PERIOD = 900.0

# ENABLED_CONTROLLERS spelling -> the key of spec.controllers ("profile" is Calico's old name).
CONTROLLER_KEYS = {
    "node": "node",
    "policy": "policy",
    "namespace": "namespace",
    "profile": "namespace",
    "serviceaccount": "serviceAccount",
    "workloadendpoint": "workloadEndpoint",
    "loadbalancer": "loadBalancer",
}
_NAMES = {key: name for name, key in CONTROLLER_KEYS.items() if name != "profile"}
_GENERIC = ("policy", "workloadEndpoint", "serviceAccount", "namespace")

# logrus' level names (ParseLevel), and their title-case form in status.
_LOG_LEVELS = {
    "panic": "Panic",
    "fatal": "Fatal",
    "error": "Error",
    "warn": "Warning",
    "warning": "Warning",
    "info": "Info",
    "debug": "Debug",
    "trace": "Trace",
}
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class ConfigError(ValueError):
    """A setting kube-controllers cannot run with; the message names the variable or field."""


@dataclass(frozen=True)
class EnvConfig:
    """What the environment says: process settings plus the override variables that are set."""

    log_level: str = "info"
    kubeconfig: str = ""
    datastore_type: str = "etcdv3"
    overrides: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EnvConfig:
        datastore = env.get("DATASTORE_TYPE", "") or "etcdv3"
        if datastore == "kubernetes":
            raise ConfigError(
                "DATASTORE_TYPE=kubernetes is not supported by pycalico's kube-controllers: "
                "Calico's data lives in etcd here (use DATASTORE_TYPE=etcdv3)"
            )
        if datastore != "etcdv3":
            raise ConfigError(f"DATASTORE_TYPE: unknown datastore type {datastore!r} (etcdv3)")
        overrides = {name: env[name] for name in ALL_ENVS if name in env}
        if ENV_LOG_LEVEL in overrides:
            parse_log_level(overrides[ENV_LOG_LEVEL], ENV_LOG_LEVEL)
        return cls(
            log_level=env.get(ENV_LOG_LEVEL, "") or "info",
            kubeconfig=env.get("KUBECONFIG", ""),
            datastore_type=datastore,
            overrides=overrides,
        )


@dataclass(frozen=True)
class ControllerConfig:
    """A controller that keeps a cache: how often it reconciles everything."""

    reconciler_period: float = DEFAULT_RECONCILER_PERIOD  # seconds


@dataclass(frozen=True)
class NodeControllerConfig:
    sync_labels: bool = True
    auto_host_endpoints: bool = False
    host_endpoint: Mapping[str, Any] = field(default_factory=dict)  # the running wire form
    delete_nodes: bool = True  # etcdv3: Calico Nodes of deleted Kubernetes nodes are removed
    leak_grace_period: float | None = DEFAULT_LEAK_GRACE_PERIOD  # seconds; None: not set


@dataclass(frozen=True)
class RunConfig:
    log_level: str = "Info"  # Calico's title case: Debug, Info, Warning, Error...
    controllers: Mapping[str, ControllerConfig] = field(default_factory=dict)  # by ENABLED name
    node: NodeControllerConfig | None = None
    etcd_v3_compaction_period: float = DEFAULT_COMPACTION_PERIOD
    health_enabled: bool = True
    prometheus_port: int = 0  # 0: no metrics server
    debug_profile_port: int = 0

    @property
    def enabled(self) -> tuple[str, ...]:
        """The enabled controllers' names (ENABLED_CONTROLLERS spelling), sorted."""
        names = set(self.controllers) | ({"node"} if self.node is not None else set())
        return tuple(sorted(names))


def default_configuration() -> KubeControllersConfiguration:
    """The ``default`` resource Calico creates when none exists (NewDefaultKubeControllersConfig,
    without the loadBalancer controller, which pycalico does not have)."""
    period = {"reconcilerPeriod": "5m0s"}
    return KubeControllersConfiguration.model_validate(
        {
            "metadata": {"name": DEFAULT_NAME},
            "spec": {
                "logSeverityScreen": "Info",
                "healthChecks": "Enabled",
                "etcdV3CompactionPeriod": "10m0s",
                "controllers": {
                    "node": {
                        "reconcilerPeriod": "5m0s",
                        "syncLabels": "Enabled",
                        "hostEndpoint": {"autoCreate": "Disabled"},
                        "leakGracePeriod": "15m0s",
                    },
                    "policy": dict(period),
                    "workloadEndpoint": dict(period),
                    "serviceAccount": dict(period),
                    "namespace": dict(period),
                },
            },
        }
    )


def parse_log_level(value: str, what: str) -> str:
    """logrus' ParseLevel, as Calico's title-case name."""
    level = _LOG_LEVELS.get(value.strip().lower())
    if level is None:
        raise ConfigError(f"{what}: {value!r} is not a log level ({', '.join(_LOG_LEVELS)})")
    return level


def _parse_bool(value: str, what: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{what}: {value!r} is not a boolean (true or false)")


def _parse_duration(value: str, what: str) -> float:
    try:
        return parse_go_duration(value) / 1e9
    except ValueError as error:
        raise ConfigError(f"{what}: {error}") from error


def _api_duration(value: Any, default: float) -> float:
    if not isinstance(value, str):
        return default
    try:
        return parse_go_duration(value) / 1e9
    except ValueError:
        return default


def _duration_text(seconds: float) -> str:
    return format_go_duration(round(seconds * 1e9))


@dataclass
class _Merge:
    """The state of one merge: the resource's spec (wire form), the variables set, the
    result being built and the status being written."""

    spec: Mapping[str, Any]
    env: Mapping[str, str]
    datastore_type: str
    enabled: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec key -> running
    status_env: dict[str, str] = field(default_factory=dict)
    running: dict[str, Any] = field(default_factory=dict)

    def override(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is not None:
            self.status_env[name] = value
        return value

    @property
    def api_controllers(self) -> Mapping[str, Any]:
        controllers = self.spec.get("controllers")
        return controllers if isinstance(controllers, Mapping) else {}


def _merge_log_level(merge: _Merge) -> str:
    value = merge.override(ENV_LOG_LEVEL)
    if value is not None:
        level = parse_log_level(value, ENV_LOG_LEVEL)
    else:
        try:
            level = parse_log_level(str(merge.spec.get("logSeverityScreen") or ""), "spec")
        except ConfigError:
            level = "Info"  # Calico: an unknown level in the resource means Info
    merge.running["logSeverityScreen"] = level
    return level


def _merge_enabled(merge: _Merge) -> None:
    value = merge.override(ENV_ENABLED_CONTROLLERS)
    if value is not None:
        for name in value.split(","):
            key = CONTROLLER_KEYS.get(name.strip())
            if key is None:
                if name.strip() == "flannelmigration":
                    raise ConfigError(
                        f"{ENV_ENABLED_CONTROLLERS}: flannelmigration is not supported by pycalico"
                    )
                raise ConfigError(
                    f"{ENV_ENABLED_CONTROLLERS}: invalid controller {name.strip()!r} "
                    f"(valid: {', '.join(sorted(CONTROLLER_KEYS))})"
                )
            merge.enabled[key] = {}
    else:
        for key, value in merge.api_controllers.items():
            if key in _NAMES and value is not None:
                merge.enabled[key] = {}
    periods: dict[str, float] = {}
    for key in _GENERIC:
        api = merge.api_controllers.get(key)
        if key in merge.enabled and isinstance(api, Mapping):
            periods[key] = _api_duration(api.get("reconcilerPeriod"), DEFAULT_RECONCILER_PERIOD)
            if api.get("reconcilerPeriod") is not None:
                merge.enabled[key]["reconcilerPeriod"] = _duration_text(periods[key])
    period = merge.override(ENV_RECONCILER_PERIOD)
    if period is not None:
        seconds = _parse_duration(period, ENV_RECONCILER_PERIOD)
        for key in _GENERIC:
            if key in merge.enabled:
                periods[key] = seconds
                merge.enabled[key]["reconcilerPeriod"] = _duration_text(seconds)
    merge.running["controllers"] = merge.enabled
    merge.running["_periods"] = periods


def _merge_compaction(merge: _Merge) -> float:
    value = merge.override(ENV_COMPACTION_PERIOD)
    if value is not None:
        seconds = _parse_duration(value, ENV_COMPACTION_PERIOD)
    else:
        seconds = _api_duration(merge.spec.get("etcdV3CompactionPeriod"), DEFAULT_COMPACTION_PERIOD)
    merge.running["etcdV3CompactionPeriod"] = _duration_text(seconds)
    return seconds


def _merge_health(merge: _Merge) -> bool:
    value = merge.override(ENV_HEALTH_ENABLED)
    if value is not None:
        enabled = _parse_bool(value, ENV_HEALTH_ENABLED)
    else:
        enabled = merge.spec.get("healthChecks") != "Disabled"
    merge.running["healthChecks"] = "Enabled" if enabled else "Disabled"
    return enabled


def _merge_node(merge: _Merge) -> NodeControllerConfig | None:
    if "node" not in merge.enabled:
        return None
    status = merge.enabled["node"]
    api = merge.api_controllers.get("node")
    api = api if isinstance(api, Mapping) else {}
    labels = merge.override(ENV_SYNC_NODE_LABELS)
    sync = (
        _parse_bool(labels, ENV_SYNC_NODE_LABELS)
        if labels is not None
        else api.get("syncLabels") != "Disabled"
    )
    status["syncLabels"] = "Enabled" if sync else "Disabled"
    host_endpoint: dict[str, Any] = {}
    auto = merge.override(ENV_AUTO_HOST_ENDPOINTS)
    if auto is not None:
        if auto.lower() not in ("enabled", "disabled"):
            raise ConfigError(f"{ENV_AUTO_HOST_ENDPOINTS}: {auto!r} is not enabled or disabled")
        host_endpoint = {"autoCreate": "Enabled" if auto.lower() == "enabled" else "Disabled"}
    elif isinstance(api.get("hostEndpoint"), Mapping):
        host_endpoint = dict(api["hostEndpoint"])
        host_endpoint["autoCreate"] = (
            "Enabled" if host_endpoint.get("autoCreate") == "Enabled" else "Disabled"
        )
    if host_endpoint:
        host_endpoint.setdefault("createDefaultHostEndpoint", "Enabled")
        status["hostEndpoint"] = host_endpoint
    grace = api.get("leakGracePeriod")
    if grace is not None:
        status["leakGracePeriod"] = grace
    return NodeControllerConfig(
        sync_labels=sync,
        auto_host_endpoints=host_endpoint.get("autoCreate") == "Enabled",
        host_endpoint=host_endpoint,
        delete_nodes=merge.datastore_type != "kubernetes",
        leak_grace_period=None if grace is None else _api_duration(grace, 0.0),
    )


def merge_config(
    env: Mapping[str, str], spec: Mapping[str, Any], *, datastore_type: str = "etcdv3"
) -> tuple[RunConfig, dict[str, Any]]:
    """The running configuration and the ``status`` to write back, from the override variables
    that are set (``EnvConfig.overrides``) and the resource's ``spec`` (wire form)."""
    merge = _Merge(spec=spec, env=env, datastore_type=datastore_type)
    level = _merge_log_level(merge)
    _merge_enabled(merge)
    periods: dict[str, float] = merge.running.pop("_periods")
    compaction = _merge_compaction(merge)
    health = _merge_health(merge)
    node = _merge_node(merge)
    port = spec.get("prometheusMetricsPort")
    profile = spec.get("debugProfilePort")
    config = RunConfig(
        log_level=level,
        controllers={
            _NAMES[key]: ControllerConfig(periods.get(key, DEFAULT_RECONCILER_PERIOD))
            for key in merge.enabled
            if key != "node"
        },
        node=node,
        etcd_v3_compaction_period=compaction,
        health_enabled=health,
        prometheus_port=port if isinstance(port, int) else 0,
        debug_profile_port=profile if isinstance(profile, int) else 0,
    )
    return config, {"runningConfig": merge.running, "environmentVars": merge.status_env}


@dataclass(frozen=True)
class ElectionConfig:
    """Leader election on a Lease (pycalico's variables; client-go's default durations)."""

    enabled: bool = True
    namespace: str = "kube-system"
    name: str = "calico-kube-controllers"
    identity: str = ""  # empty: the host name and a random suffix
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ElectionConfig:
        def duration(name: str, default: float) -> float:
            value = env.get(name, "")
            return _parse_duration(value, name) if value else default

        enabled = env.get("LEADER_ELECTION", "")
        config = cls(
            enabled=_parse_bool(enabled, "LEADER_ELECTION") if enabled else True,
            namespace=env.get("LEADER_ELECTION_NAMESPACE", "") or cls.namespace,
            name=env.get("LEADER_ELECTION_NAME", "") or cls.name,
            identity=env.get("LEADER_ELECTION_IDENTITY", "") or env.get("POD_NAME", ""),
            lease_duration=duration("LEADER_ELECTION_LEASE_DURATION", cls.lease_duration),
            renew_deadline=duration("LEADER_ELECTION_RENEW_DEADLINE", cls.renew_deadline),
            retry_period=duration("LEADER_ELECTION_RETRY_PERIOD", cls.retry_period),
        )
        if not 0 < config.retry_period < config.renew_deadline < config.lease_duration:
            raise ConfigError(
                "LEADER_ELECTION_RETRY_PERIOD < LEADER_ELECTION_RENEW_DEADLINE < "
                "LEADER_ELECTION_LEASE_DURATION is required "
                f"(got {config.retry_period}s, {config.renew_deadline}s, {config.lease_duration}s)"
            )
        return config
