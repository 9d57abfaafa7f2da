"""Felix's configuration: fields, parsing, and Calico's precedence of sources.

What it is: the table of Felix parameters this implementation honours (FelixConfiguration JSON
names, defaults from reference §3.7), parsing of their string forms, and the merge
``environment FELIX_<NAME> > config file > FelixConfiguration node.<host> > default > built-in``.
The datastore layers arrive already merged (``ConfigUpdate`` from the calculation graph); this
module adds the built-in defaults below and the file and environment above.
What it is not: a reader of etcd (the daemon feeds it) or a validator of resources (``model``).

Invariants:

* The environment layer also takes Calico's datastore client variables (``DATASTORE_TYPE``,
  ``ETCD_ENDPOINTS``, ``ETCD_CA_CERT_FILE``, ``ETCD_CERT_FILE``, ``ETCD_KEY_FILE``) and
  calico-node's ``CALICO_DISABLE_FILE_LOGGING=true``; ``FELIX_*`` names win over them.
* Names match case-insensitively in every source (Calico's env and file names are
  case-insensitive: ``FELIX_HEALTHPORT``, ``HealthPort`` and ``healthPort`` are one field).
* A value that does not parse is an error naming the field, the source and the value
  (``ConfigError``); unknown names are ignored (other Calico fields we do not implement).
* ``restart_needed(old, new)`` is True when a field marked restart-only differs: the daemon then
  exits with ``EXIT_CONFIG_CHANGED`` so its supervisor starts it again with the new values.

Deviation from Calico, on purpose: ``deviceRouteProtocol`` defaults to 80 (not 3) so Felix owns
its routes by protocol alone (see ``felix.drivers.routes``).
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pycalico.felix.rules.model import FailsafePort, RenderConfig

EXIT_CONFIG_CHANGED = 129  # Calico Felix's exit status for "config changed, restart me"
DEFAULT_CONFIG_FILE = "/etc/calico/felix.cfg"


class ConfigError(ValueError):
    pass


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "y", "t"):
        return True
    if lowered in ("false", "0", "no", "n", "f"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a number of seconds (env/file style) or a Go duration ("1m30s")."""
    stripped = text.strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    parts = _DURATION.findall(stripped)
    if not parts or "".join(n + u for n, u in parts) != stripped:
        raise ValueError(f"{text!r} is not a duration")
    return sum(float(number) * _UNIT[unit] for number, unit in parts)


def parse_ports(text: str) -> tuple[FailsafePort, ...]:
    """Calico's failsafe list: ``tcp:22,udp:68`` or ``tcp:10.0.0.0/8:22``; "none" is empty."""
    if text.strip().lower() in ("", "none"):
        return ()
    ports = []
    for item in text.split(","):
        pieces = item.strip().split(":")
        if len(pieces) == 1:
            protocol, net, port = "tcp", "", pieces[0]
        elif len(pieces) == 2:
            protocol, net, port = pieces[0], "", pieces[1]
        else:
            protocol, net, port = pieces[0], ":".join(pieces[1:-1]), pieces[-1]
        protocol = protocol.lower()
        if protocol not in ("tcp", "udp", "sctp"):
            raise ValueError(f"{item!r}: protocol must be tcp, udp or sctp")
        ports.append(FailsafePort(protocol, int(port), net))  # type: ignore[arg-type]
    return tuple(ports)


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        for option in allowed:
            if text.strip().lower() == option.lower():
                return option
        raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")

    return parse


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _str(text: str) -> str:
    return text.strip()


def _ipv4_or_empty(text: str) -> str:
    """Calico's ``ipv4`` config type (``natOutgoingAddress``): empty, or an IPv4 address."""
    text = text.strip()
    if text and not isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address):
        raise ValueError(f"{text!r} is not an IPv4 address")
    return text


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not low <= value <= high:
            raise ValueError(f"{value} is not in {low}..{high}")
        return value

    return parse


_ROUTE_PRIORITY = _int_range(1, 2147483646)  # Calico's route priority (kernel metric) range


_FAILSAFE_IN = "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
_FAILSAFE_OUT = "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
_SEVERITIES = _choice("Debug", "Info", "Warning", "Error", "Fatal")


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # FelixConfiguration JSON name
    parse: Callable[[str], Any]
    default: str
    restart: bool = True


def _setting(name: str, parse: Callable[[str], Any], default: str, restart: bool = True) -> Any:
    """A typed attribute of ``FelixConfig``, read from the Calico field ``name``."""
    return dataclasses.field(metadata={"felix": Field(name, parse, default, restart)})


@dataclass(frozen=True, slots=True)
class FelixConfig:
    """The effective Felix settings, typed (kopf's style: one attribute per parameter).

    Each attribute's metadata names its Calico field, parser, built-in default and whether a
    change needs a restart; ``load`` builds it, ``sources`` says where each value came from.
    """

    felix_hostname: str = _setting("felixHostname", _str, "")
    datastore_type: str = _setting("datastoreType", _choice("etcdv3"), "etcdv3")
    etcd_endpoints: tuple[str, ...] = _setting("etcdEndpoints", _list, "http://127.0.0.1:2379")
    etcd_ca_file: str = _setting("etcdCaFile", _str, "")
    etcd_cert_file: str = _setting("etcdCertFile", _str, "")
    etcd_key_file: str = _setting("etcdKeyFile", _str, "")
    interface_prefix: tuple[str, ...] = _setting("interfacePrefix", _list, "cali")
    interface_exclude: tuple[str, ...] = _setting("interfaceExclude", _list, "kube-ipvs0")
    default_endpoint_to_host_action: str = _setting(
        "defaultEndpointToHostAction", _choice("Drop", "Accept", "Return"), "Drop"
    )
    iptables_filter_deny_action: str = _setting(
        "iptablesFilterDenyAction", _choice("Drop", "Reject"), "Drop"
    )
    log_prefix: str = _setting("logPrefix", _str, "calico-packet")
    log_severity_screen: str = _setting("logSeverityScreen", _SEVERITIES, "Info", restart=False)
    log_file_path: str = _setting("logFilePath", _str, "/var/log/calico/felix.log")
    log_severity_file: str = _setting("logSeverityFile", _SEVERITIES, "Info")
    reporting_interval: float = _setting("reportingInterval", parse_duration, "30s", False)
    reporting_ttl: float = _setting("reportingTTL", parse_duration, "90s", restart=False)
    route_refresh_interval: float = _setting("routeRefreshInterval", parse_duration, "90s")
    iptables_refresh_interval: float = _setting("iptablesRefreshInterval", parse_duration, "180s")
    device_route_protocol: int = _setting("deviceRouteProtocol", int, "80")
    # Workload routes' metric; "elevated" is Calico's VM live-migration priority (accepted and
    # validated, not used: no live migration here).
    ipv4_normal_route_priority: int = _setting("ipv4NormalRoutePriority", _ROUTE_PRIORITY, "1024")
    ipv6_normal_route_priority: int = _setting("ipv6NormalRoutePriority", _ROUTE_PRIORITY, "1024")
    ipv4_elevated_route_priority: int = _setting(
        "ipv4ElevatedRoutePriority", _ROUTE_PRIORITY, "512"
    )
    ipv6_elevated_route_priority: int = _setting(
        "ipv6ElevatedRoutePriority", _ROUTE_PRIORITY, "512"
    )
    remove_external_routes: bool = _setting("removeExternalRoutes", parse_bool, "true")
    vxlan_port: int = _setting("vxlanPort", _int_range(1, 65535), "4789")
    vxlan_vni: int = _setting("vxlanVNI", _int_range(1, 2**24 - 1), "4096")
    # "" (unset): on when an IP pool of the family has vxlanMode Always or CrossSubnet.
    vxlan_enabled: str = _setting("vxlanEnabled", _choice("", "true", "false"), "")
    vxlan_mtu: int = _setting("vxlanMTU", _int_range(0, 65535), "0")  # 0: auto
    vxlan_mtu_v6: int = _setting("vxlanMTUV6", _int_range(0, 65535), "0")
    # Where the pods' MTU goes for the CNI plugin (Calico: fixed /var/lib/calico/mtu; a setting
    # here so that many nodes can share one machine).
    mtu_file_path: str = _setting("mtuFilePath", _str, "/var/lib/calico/mtu")
    failsafe_inbound_host_ports: tuple[FailsafePort, ...] = _setting(
        "failsafeInboundHostPorts", parse_ports, _FAILSAFE_IN
    )
    failsafe_outbound_host_ports: tuple[FailsafePort, ...] = _setting(
        "failsafeOutboundHostPorts", parse_ports, _FAILSAFE_OUT
    )
    health_enabled: bool = _setting("healthEnabled", parse_bool, "false")
    health_host: str = _setting("healthHost", _str, "localhost")
    health_port: int = _setting("healthPort", int, "9099")
    prometheus_metrics_enabled: bool = _setting("prometheusMetricsEnabled", parse_bool, "false")
    prometheus_metrics_host: str = _setting("prometheusMetricsHost", _str, "")
    prometheus_metrics_port: int = _setting("prometheusMetricsPort", int, "9091")
    # Flow logs and rule counters (docs/flows.md); opt-in, as Calico's flow logs.
    flow_logs_file_enabled: bool = _setting("flowLogsFileEnabled", parse_bool, "false")
    flow_logs_file_directory: str = _setting("flowLogsFileDirectory", _str, "/var/log/calico/flows")
    flow_logs_nflog_group: int = _setting("flowLogsNflogGroup", int, "11")
    flow_logs_denied_rate: str = _setting("flowLogsDeniedRate", _str, "100/second")
    policy_rule_counters_enabled: bool = _setting("policyRuleCountersEnabled", parse_bool, "false")
    policy_rule_counters_interval: float = _setting(
        "policyRuleCountersInterval", parse_duration, "10s"
    )
    endpoint_reporting_enabled: bool = _setting(
        "endpointReportingEnabled", parse_bool, "false", restart=False
    )
    endpoint_reporting_delay_secs: float = _setting(
        "endpointReportingDelaySecs", parse_duration, "1", restart=False
    )
    endpoint_status_path_prefix: str = _setting("endpointStatusPathPrefix", _str, "/var/run/calico")
    disable_conntrack_invalid_check: bool = _setting(
        "disableConntrackInvalidCheck", parse_bool, "false"
    )
    ipv6_support: bool = _setting("ipv6Support", parse_bool, "true")
    ip_forwarding: str = _setting("ipForwarding", _choice("Enabled", "Disabled"), "Enabled")
    allow_vxlan_packets_from_workloads: bool = _setting(
        "allowVXLANPacketsFromWorkloads", parse_bool, "false"
    )
    allow_ipip_packets_from_workloads: bool = _setting(
        "allowIPIPPacketsFromWorkloads", parse_bool, "false"
    )
    nat_outgoing_address: str = _setting("natOutgoingAddress", _ipv4_or_empty, "")
    openstack_region: str = _setting("openstackRegion", _str, "")
    max_ipset_size: int = _setting("maxIpsetSize", int, "1048576")
    nftables_flow_table_offload: str = _setting(
        "nftablesFlowTableOffload", _choice("Enabled", "Disabled"), "Disabled"
    )
    # By Calico field name: "default", "datastore", "file" or "env".
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def hostname(self) -> str:
        return self.felix_hostname

    def render(self) -> RenderConfig:
        return RenderConfig(
            interface_prefixes=self.interface_prefix,
            default_endpoint_to_host_action=self.default_endpoint_to_host_action,  # type: ignore[arg-type]
            disable_conntrack_invalid_check=self.disable_conntrack_invalid_check,
            deny_action=self.iptables_filter_deny_action,  # type: ignore[arg-type]
            log_prefix=self.log_prefix,
            allow_vxlan_packets_from_workloads=self.allow_vxlan_packets_from_workloads,
            allow_ipip_packets_from_workloads=self.allow_ipip_packets_from_workloads,
            vxlan_port=self.vxlan_port,
            ipv6_support=self.ipv6_support,
            failsafe_inbound=self.failsafe_inbound_host_ports,
            failsafe_outbound=self.failsafe_outbound_host_ports,
            flowtable_offload=self.nftables_flow_table_offload == "Enabled",
            rule_counters=self.policy_rule_counters_enabled,
            deny_log_group=self.flow_logs_nflog_group if self.flow_logs_file_enabled else 0,
            deny_log_rate=self.flow_logs_denied_rate,
            nat_outgoing_address=self.nat_outgoing_address,
        )

    def status_region(self) -> str:
        return f"region-{self.openstack_region}" if self.openstack_region else "no-region"

    def value(self, name: str) -> Any:
        """The parsed value of the Calico field ``name`` (any spelling; for tests and logs)."""
        field = _field(name)
        if field is None:
            raise KeyError(name)
        return getattr(self, _ATTRIBUTES[field.name])


# Calico field name -> attribute, and the fields in declaration order.
_ATTRIBUTES: dict[str, str] = {
    f.metadata["felix"].name: f.name for f in dataclasses.fields(FelixConfig) if f.metadata
}
FIELDS: tuple[Field, ...] = tuple(
    f.metadata["felix"] for f in dataclasses.fields(FelixConfig) if f.metadata
)
_BY_LOWER = {field.name.lower(): field for field in FIELDS}
# Calico's older/alternative spellings of the same fields.
_ALIASES = {
    "reportingintervalsecs": "reportinginterval",
    "reportingttlsecs": "reportingttl",
    "nftablesfilterdenyaction": "iptablesfilterdenyaction",
    "nftablesrefreshinterval": "iptablesrefreshinterval",
}


def _field(name: str) -> Field | None:
    lowered = name.lower()
    return _BY_LOWER.get(_ALIASES.get(lowered, lowered))


def read_config_file(path: str) -> dict[str, str]:
    """Calico's ``felix.cfg``: INI, section ``[global]``; a missing file is empty."""
    if not path or not os.path.exists(path):
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read(path)
    except configparser.Error as error:
        raise ConfigError(f"config file {path}: {error}") from None
    return dict(parser["global"]) if parser.has_section("global") else {}


# Calico's datastore client settings (what calico-node and calicoctl read); Felix's own
# FELIX_* names win when both are set.
_DATASTORE_ENV = {
    "DATASTORE_TYPE": "datastoreType",
    "ETCD_ENDPOINTS": "etcdEndpoints",
    "ETCD_CA_CERT_FILE": "etcdCaFile",
    "ETCD_CERT_FILE": "etcdCertFile",
    "ETCD_KEY_FILE": "etcdKeyFile",
}


def environment_values(environ: Mapping[str, str]) -> dict[str, str]:
    values = {name: environ[key] for key, name in _DATASTORE_ENV.items() if environ.get(key)}
    if environ.get("CALICO_DISABLE_FILE_LOGGING", "").lower() == "true":
        values["logFilePath"] = "none"  # calico-node's switch: its supervisor keeps the logs
    values.update(
        {k[len("FELIX_") :]: v for k, v in environ.items() if k.upper().startswith("FELIX_")}
    )
    return values


def load(
    datastore: Mapping[str, str] | None = None,
    file_values: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    default_hostname: str | None = None,
) -> FelixConfig:
    """The effective config: env > file > datastore (node > global, pre-merged) > built-in."""
    raw: dict[str, tuple[str, str]] = {f.name: (f.default, "default") for f in FIELDS}
    for source, values in (
        ("datastore", datastore or {}),
        ("file", file_values or {}),
        ("env", environment_values(environ or {})),
    ):
        for name, text in values.items():
            field = _field(name)
            if field is not None:
                raw[field.name] = (text, source)
    parsed: dict[str, Any] = {}
    for field in FIELDS:
        text, source = raw[field.name]
        try:
            parsed[_ATTRIBUTES[field.name]] = field.parse(text)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"config {field.name} (from {source}): {error}") from None
    if not parsed["felix_hostname"]:
        hostname = default_hostname or os.environ.get("NODENAME") or socket.gethostname()
        parsed["felix_hostname"] = hostname
    return FelixConfig(**parsed, sources={name: source for name, (_, source) in raw.items()})


def restart_needed(old: FelixConfig, new: FelixConfig) -> list[str]:
    """The restart-only fields whose values differ (empty: no restart)."""
    return [
        f.name
        for f in FIELDS
        if f.restart and getattr(old, _ATTRIBUTES[f.name]) != getattr(new, _ATTRIBUTES[f.name])
    ]
