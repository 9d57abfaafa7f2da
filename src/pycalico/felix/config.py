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


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # FelixConfiguration JSON name
    parse: Callable[[str], Any]
    default: str
    restart: bool = True


_FAILSAFE_IN = "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
_FAILSAFE_OUT = "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"

FIELDS: tuple[Field, ...] = (
    Field("felixHostname", _str, ""),
    Field("datastoreType", _choice("etcdv3"), "etcdv3"),
    Field("etcdEndpoints", _list, "http://127.0.0.1:2379"),
    Field("etcdCaFile", _str, ""),
    Field("etcdCertFile", _str, ""),
    Field("etcdKeyFile", _str, ""),
    Field("interfacePrefix", _list, "cali"),
    Field("interfaceExclude", _list, "kube-ipvs0"),
    Field("defaultEndpointToHostAction", _choice("Drop", "Accept", "Return"), "Drop"),
    Field("iptablesFilterDenyAction", _choice("Drop", "Reject"), "Drop"),
    Field("logPrefix", _str, "calico-packet"),
    Field(
        "logSeverityScreen",
        _choice("Debug", "Info", "Warning", "Error", "Fatal"),
        "Info",
        restart=False,
    ),
    Field("logFilePath", _str, "/var/log/calico/felix.log"),
    Field("logSeverityFile", _choice("Debug", "Info", "Warning", "Error", "Fatal"), "Info"),
    Field("reportingInterval", parse_duration, "30s", restart=False),
    Field("reportingTTL", parse_duration, "90s", restart=False),
    Field("routeRefreshInterval", parse_duration, "90s"),
    Field("iptablesRefreshInterval", parse_duration, "180s"),
    Field("deviceRouteProtocol", int, "80"),
    Field("removeExternalRoutes", parse_bool, "true"),
    Field("vxlanPort", int, "4789"),
    Field("failsafeInboundHostPorts", parse_ports, _FAILSAFE_IN),
    Field("failsafeOutboundHostPorts", parse_ports, _FAILSAFE_OUT),
    Field("healthEnabled", parse_bool, "false"),
    Field("healthHost", _str, "localhost"),
    Field("healthPort", int, "9099"),
    Field("prometheusMetricsEnabled", parse_bool, "false"),
    Field("prometheusMetricsHost", _str, ""),
    Field("prometheusMetricsPort", int, "9091"),
    Field("endpointReportingEnabled", parse_bool, "false", restart=False),
    Field("endpointReportingDelaySecs", parse_duration, "1", restart=False),
    Field("endpointStatusPathPrefix", _str, "/var/run/calico"),
    Field("disableConntrackInvalidCheck", parse_bool, "false"),
    Field("ipv6Support", parse_bool, "true"),
    Field("allowVXLANPacketsFromWorkloads", parse_bool, "false"),
    Field("allowIPIPPacketsFromWorkloads", parse_bool, "false"),
    Field("openstackRegion", _str, ""),
    Field("maxIpsetSize", int, "1048576"),
    Field("nftablesFlowTableOffload", _choice("Enabled", "Disabled"), "Disabled"),
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


@dataclass(frozen=True)
class FelixConfig:
    values: Mapping[str, Any]  # by FelixConfiguration name, parsed
    sources: Mapping[str, str]  # by name: "default", "datastore", "file", "env"

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def hostname(self) -> str:
        return str(self.values["felixHostname"])

    def render(self) -> RenderConfig:
        return RenderConfig(
            interface_prefixes=tuple(self.values["interfacePrefix"]),
            default_endpoint_to_host_action=self.values["defaultEndpointToHostAction"],
            disable_conntrack_invalid_check=self.values["disableConntrackInvalidCheck"],
            deny_action=self.values["iptablesFilterDenyAction"],
            log_prefix=self.values["logPrefix"],
            allow_vxlan_packets_from_workloads=self.values["allowVXLANPacketsFromWorkloads"],
            allow_ipip_packets_from_workloads=self.values["allowIPIPPacketsFromWorkloads"],
            vxlan_port=self.values["vxlanPort"],
            ipv6_support=self.values["ipv6Support"],
            failsafe_inbound=self.values["failsafeInboundHostPorts"],
            failsafe_outbound=self.values["failsafeOutboundHostPorts"],
            flowtable_offload=self.values["nftablesFlowTableOffload"] == "Enabled",
        )

    def status_region(self) -> str:
        region = self.values["openstackRegion"]
        return f"region-{region}" if region else "no-region"


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
            parsed[field.name] = field.parse(text)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"config {field.name} (from {source}): {error}") from None
    if not parsed["felixHostname"]:
        hostname = default_hostname or os.environ.get("NODENAME") or socket.gethostname()
        parsed["felixHostname"] = hostname
    return FelixConfig(parsed, {name: source for name, (_, source) in raw.items()})


def restart_needed(old: FelixConfig, new: FelixConfig) -> list[str]:
    """The restart-only fields whose values differ (empty: no restart)."""
    return [f.name for f in FIELDS if f.restart and old.values[f.name] != new.values[f.name]]
