"""The ``calico`` plugin's network configuration (NetConf): every Linux key Calico reads, typed.

What it is: ``NetConf.parse`` turns the JSON object a runtime passes on stdin into a frozen
dataclass, checking each key's type and naming the key in every error (CNI code 7, invalid
network configuration).  Keys are Calico's (reference §6.1, ``cni-plugin/pkg/types``); the
defaults are Calico's.  Keys the plugin does not act on here (``mode``, ``vxlan_*``,
``num_queues``, ``readiness_gates``, ``qps``/``burst``, ``dataplane_options``, the Kubernetes API
settings) are accepted and kept, so a Calico conflist works unchanged.  Unknown keys are
ignored, as the CNI specification asks of plugins.

What it is not: reading files (the MTU file, the nodename file), talking to etcd, or choosing
between the configuration and the environment for the datastore (``datastore_settings`` in
``pycalico.cni.ipam_handler`` does that, for both plugins).

Invariants: pure (standard library and ``pycalico.cni.spec`` only); a ``NetConf`` that parsed
is internally consistent (``ipam.type`` is set, at least one address family is requested for
calico-ipam, ``mtu`` is 0 or a valid MTU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.cni.spec import ERR_INVALID_NETWORK_CONFIG, CniError, config_flag

DEFAULT_NETWORK = "k8s-pod-network"
DEFAULT_LOG_FILE = "/var/log/calico/cni/cni.log"
DEFAULT_LOG_LEVEL = "info"
DEFAULT_MTU_FILE = "/var/lib/calico/mtu"
DEFAULT_MTU = 1500
CALICO_IPAM = "calico-ipam"
LOG_LEVELS = ("panic", "fatal", "error", "warning", "warn", "info", "debug", "trace", "none")
DEVICE_TYPES = ("veth",)
DATASTORE_TYPES = ("", "etcdv3")


def _invalid(key: str, problem: str) -> CniError:
    return CniError(f"{key}: {problem}", code=ERR_INVALID_NETWORK_CONFIG)


def _string(raw: Mapping[str, Any], key: str, where: str = "", default: str = "") -> str:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _invalid(where + key, f"expected a string, got {type(value).__name__}")
    return value


def _integer(raw: Mapping[str, Any], key: str, where: str = "", default: int = 0) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _invalid(where + key, f"expected an integer, got {type(value).__name__}")
    try:
        return int(value)
    except ValueError:
        raise _invalid(where + key, f"{value!r} is not an integer") from None


def _flag(raw: Mapping[str, Any], key: str, where: str = "", default: bool = False) -> bool:
    value = raw.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _invalid(where + key, f'expected true or false (or "true"/"false"), got {value!r}')


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(key, f"expected an object, got {type(value).__name__}")
    return value


def _strings(raw: Mapping[str, Any], key: str, where: str = "") -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise _invalid(where + key, "expected a list of strings")


@dataclass(frozen=True, slots=True)
class IPAMSettings:
    """The ``ipam`` section; ``raw`` is handed verbatim to whichever IPAM plugin is named."""

    type: str
    assign_ipv4: bool = True
    assign_ipv6: bool = False
    ipv4_pools: tuple[str, ...] = ()
    ipv6_pools: tuple[str, ...] = ()
    subnet: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    type: str = ""
    k8s_api_root: str = ""
    k8s_auth_token: str = ""
    k8s_client_certificate: str = ""
    k8s_client_key: str = ""
    k8s_certificate_authority: str = ""


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    kubeconfig: str = ""
    k8s_api_root: str = ""
    node_name: str = ""


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = DEFAULT_LOG_LEVEL
    file_path: str = DEFAULT_LOG_FILE
    max_size_mb: int = 100
    max_age_days: int = 30
    max_count: int = 10


@dataclass(frozen=True, slots=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    ipam: IPAMSettings
    nodename: str = ""
    nodename_file: str = ""
    nodename_file_optional: bool = False
    hostname: str = ""
    mtu: int = 0
    require_mtu_file: bool = False
    num_queues: int = 0
    mode: str = ""
    vxlan_mac_prefix: str = ""
    vxlan_vni: int = 0
    datastore_type: str = ""
    etcd_endpoints: str = ""
    etcd_discovery_srv: str = ""
    etcd_scheme: str = ""
    etcd_authority: str = ""
    etcd_key_file: str = ""
    etcd_cert_file: str = ""
    etcd_ca_cert_file: str = ""
    ipam_lock_file: str = ""
    log: LogSettings = field(default_factory=LogSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    allow_ip_forwarding: bool = False
    ip_addrs_no_ipam: bool = False
    floating_ips: bool = False
    include_default_routes: bool = False
    device_type: str = "veth"
    readiness_gates: tuple[str, ...] = ()
    policy_setup_timeout_seconds: int = 0
    endpoint_status_dir: str = ""
    calico_api_group: str = ""
    runtime_config: Mapping[str, Any] = field(default_factory=dict)
    args: Mapping[str, Any] = field(default_factory=dict)
    prev_result: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> NetConf:
        name = _string(raw, "name")
        if not name:
            raise _invalid("name", "the network configuration needs a name")
        ipam = _parse_ipam(_section(raw, "ipam"))
        mtu, datastore_type, device_type = _checked_choices(raw)
        log = _parse_log(raw)
        policy_raw = _section(raw, "policy")
        kubernetes_raw = _section(raw, "kubernetes")
        features = _section(raw, "feature_control")
        container = _section(raw, "container_settings")
        runtime_config = _section(raw, "runtimeConfig")
        args = _section(raw, "args")
        previous = raw.get("prevResult")
        if previous is not None and not isinstance(previous, dict):
            raise _invalid("prevResult", "expected an object")
        return cls(
            cni_version=_string(raw, "cniVersion"),
            name=name,
            type=_string(raw, "type"),
            ipam=ipam,
            nodename=_string(raw, "nodename").strip(),
            nodename_file=_string(raw, "nodename_file"),
            nodename_file_optional=_flag(raw, "nodename_file_optional"),
            hostname=_string(raw, "hostname").strip(),
            mtu=mtu,
            require_mtu_file=_flag(raw, "require_mtu_file"),
            num_queues=_integer(raw, "num_queues"),
            mode=_string(raw, "mode"),
            vxlan_mac_prefix=_string(raw, "vxlan_mac_prefix"),
            vxlan_vni=_integer(raw, "vxlan_vni"),
            datastore_type=datastore_type,
            etcd_endpoints=_string(raw, "etcd_endpoints"),
            etcd_discovery_srv=_string(raw, "etcd_discovery_srv"),
            etcd_scheme=_string(raw, "etcd_scheme"),
            etcd_authority=_string(raw, "etcd_authority"),
            etcd_key_file=_string(raw, "etcd_key_file"),
            etcd_cert_file=_string(raw, "etcd_cert_file"),
            etcd_ca_cert_file=_string(raw, "etcd_ca_cert_file"),
            ipam_lock_file=_string(raw, "ipam_lock_file"),
            log=log,
            policy=PolicySettings(
                **{
                    key: _string(policy_raw, key, "policy.")
                    for key in PolicySettings.__dataclass_fields__
                }
            ),
            kubernetes=KubernetesSettings(
                **{
                    key: _string(kubernetes_raw, key, "kubernetes.")
                    for key in KubernetesSettings.__dataclass_fields__
                }
            ),
            allow_ip_forwarding=_flag(
                container, "allow_ip_forwarding", "container_settings.", False
            ),
            ip_addrs_no_ipam=_flag(features, "ip_addrs_no_ipam", "feature_control."),
            floating_ips=_flag(features, "floating_ips", "feature_control."),
            include_default_routes=_flag(raw, "include_default_routes"),
            device_type=device_type,
            readiness_gates=_strings(raw, "readiness_gates"),
            policy_setup_timeout_seconds=_integer(raw, "policy_setup_timeout_seconds"),
            endpoint_status_dir=_string(raw, "endpoint_status_dir"),
            calico_api_group=_string(raw, "calico_api_group"),
            runtime_config=dict(runtime_config),
            args=dict(args),
            prev_result=dict(previous) if previous is not None else None,
        )

    def cni_labels(self) -> dict[str, str]:
        """Workload labels from the CNI conventions' ``args.cni.labels`` list of key/value pairs
        (how a runtime without the Kubernetes API hands labels to the plugin)."""
        cni_args = self.args.get("cni")
        if cni_args is None:
            return {}
        if not isinstance(cni_args, dict):
            raise _invalid("args.cni", "expected an object")
        entries = cni_args.get("labels")
        if entries is None:
            return {}
        if not isinstance(entries, list):
            raise _invalid("args.cni.labels", "expected a list of {key, value} objects")
        labels: dict[str, str] = {}
        for index, entry in enumerate(entries):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("key"), str)
                or not isinstance(entry.get("value"), str)
            ):
                raise _invalid(f"args.cni.labels[{index}]", "expected {key: string, value: string}")
            labels[entry["key"]] = entry["value"]
        return labels


def _parse_ipam(ipam_raw: Mapping[str, Any]) -> IPAMSettings:
    ipam_type = _string(ipam_raw, "type", "ipam.")
    if not ipam_type:
        raise _invalid("ipam.type", "no IPAM plugin named (e.g. 'calico-ipam', 'host-local')")
    if "/" in ipam_type or ipam_type in (".", ".."):
        raise _invalid("ipam.type", f"{ipam_type!r} is not a plugin name")
    ipam = IPAMSettings(
        type=ipam_type,
        assign_ipv4=config_flag(_flag_text(ipam_raw, "assign_ipv4"), True),
        assign_ipv6=config_flag(_flag_text(ipam_raw, "assign_ipv6"), False),
        ipv4_pools=_strings(ipam_raw, "ipv4_pools", "ipam."),
        ipv6_pools=_strings(ipam_raw, "ipv6_pools", "ipam."),
        subnet=_string(ipam_raw, "subnet", "ipam."),
        raw=dict(ipam_raw),
    )
    if ipam_type == CALICO_IPAM and not (ipam.assign_ipv4 or ipam.assign_ipv6):
        raise _invalid("ipam.assign_ipv4", "assign_ipv4 and assign_ipv6 are both false")
    return ipam


def _checked_choices(raw: Mapping[str, Any]) -> tuple[int, str, str]:
    """(mtu, datastore_type, device_type), each checked against what pycalico supports."""
    mtu = _integer(raw, "mtu")
    if mtu != 0 and not 68 <= mtu <= 65535:
        raise _invalid("mtu", f"{mtu} is not a valid MTU (68-65535, or 0 for the MTU file)")
    datastore_type = _string(raw, "datastore_type")
    if datastore_type not in DATASTORE_TYPES:
        raise _invalid(
            "datastore_type", f"{datastore_type!r} is not supported (pycalico uses 'etcdv3')"
        )
    device_type = _string(raw, "device_type", default="veth") or "veth"
    if device_type not in DEVICE_TYPES:
        raise _invalid("device_type", f"{device_type!r} is not supported (only 'veth')")
    return mtu, datastore_type, device_type


def _parse_log(raw: Mapping[str, Any]) -> LogSettings:
    log_level = _string(raw, "log_level", default=DEFAULT_LOG_LEVEL) or DEFAULT_LOG_LEVEL
    if log_level.lower() not in LOG_LEVELS:
        raise _invalid("log_level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    return LogSettings(
        level=log_level.lower(),
        file_path=_string(raw, "log_file_path", default=DEFAULT_LOG_FILE),
        max_size_mb=_integer(raw, "log_file_max_size", default=100),
        max_age_days=_integer(raw, "log_file_max_age", default=30),
        max_count=_integer(raw, "log_file_max_count", default=10),
    )


def _flag_text(raw: Mapping[str, Any], key: str) -> Any:
    """Calico's IPAM flags are strings ("true"); a boolean is accepted too, anything else not."""
    value = raw.get(key)
    if value is None or isinstance(value, bool | str):
        return value
    raise _invalid(f"ipam.{key}", f'expected "true" or "false", got {value!r}')
