"""The CNI specification's wire formats: invocation environment, results per version, errors.

Pure and standard-library only, so the thin plugin executables can import it before deciding
whether to forward a request to the node agent.  Generic: nothing here is specific to IPAM, so
the ``calico`` plugin shares it.  Not here: reading files, talking to etcd or the kernel.

Invariants:

* ``SUPPORTED_VERSIONS`` are the cniVersions we accept; an empty cniVersion means ``0.2.0``
  (Calico's reading of the spec's default); anything else is refused with code 1.
* Results are rendered in the shape of the requested version: ``ip4``/``ip6`` objects for 0.1.0
  and 0.2.0, an ``ips`` list with ``version`` fields for 0.3.x/0.4.0, without them from 1.0.0.
* An error is one JSON object ``{"cniVersion", "code", "msg", "details"}`` on stdout, and the
  process exits non-zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycalico.cni.versions import SUPPORTED_VERSIONS

__all__ = ["SUPPORTED_VERSIONS"]  # re-exported: callers know it as spec.SUPPORTED_VERSIONS
DEFAULT_VERSION = "0.2.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")

# Error codes from the CNI specification, and Calico's (skel's) catch-all.
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENVIRONMENT = 4
ERR_IO = 5
ERR_DECODING = 6
ERR_INVALID_NETWORK_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_INTERNAL = 999


class CniError(Exception):
    """A failure to report as CNI error JSON; ``code`` follows the specification."""

    def __init__(self, msg: str, *, code: int = ERR_INTERNAL, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class Invocation:
    """One plugin call: the ``CNI_*`` environment and the network configuration on stdin."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]
    path: str
    config: Mapping[str, Any]
    raw_config: str

    @property
    def cni_version(self) -> str:
        value = self.config.get("cniVersion") or DEFAULT_VERSION
        return str(value)

    @property
    def network_name(self) -> str:
        return str(self.config.get("name") or "")

    @property
    def ipam(self) -> Mapping[str, Any]:
        section = self.config.get("ipam") or {}
        return section if isinstance(section, dict) else {}


def parse_cni_args(text: str) -> dict[str, str]:
    """``CNI_ARGS`` (``K1=V1;K2=V2``) as a dict; a pair without ``=`` is a decoding error."""
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise CniError(
                f"CNI_ARGS: invalid pair {pair!r} (expected KEY=VALUE)", code=ERR_DECODING
            )
        out[key] = value
    return out


def parse_invocation(env: Mapping[str, str], stdin: str) -> Invocation:
    """Read the environment and stdin the way libcni's skel does, with its error messages."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CniError("required env variables [CNI_COMMAND] missing", code=ERR_INVALID_ENVIRONMENT)
    if command not in COMMANDS:
        raise CniError(f"unknown CNI_COMMAND: {command}", code=ERR_INVALID_ENVIRONMENT)
    if command == "VERSION":
        config: dict[str, Any] = {}
        if stdin.strip():
            try:
                loaded = json.loads(stdin)
                config = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                config = {}
        return Invocation(command, "", "", "", {}, env.get("CNI_PATH", ""), config, stdin)
    required = ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]
    if command == "ADD":
        required.insert(1, "CNI_NETNS")
    missing = [name for name in required if not env.get(name)]
    if missing and command in ("ADD", "CHECK"):
        raise CniError(
            f"required env variables [{','.join(missing)}] missing", code=ERR_INVALID_ENVIRONMENT
        )
    if not env.get("CNI_CONTAINERID") and command == "DEL":
        raise CniError(
            "required env variables [CNI_CONTAINERID] missing", code=ERR_INVALID_ENVIRONMENT
        )
    try:
        loaded = json.loads(stdin)
    except ValueError as exc:
        raise CniError(f"failed to load netconf: {exc}", code=ERR_DECODING) from None
    if not isinstance(loaded, dict):
        raise CniError("failed to load netconf: expected a JSON object", code=ERR_DECODING)
    invocation = Invocation(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=parse_cni_args(env.get("CNI_ARGS", "")),
        path=env.get("CNI_PATH", ""),
        config=loaded,
        raw_config=stdin,
    )
    check_version(invocation.cni_version)
    return invocation


def check_version(version: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            f"incompatible CNI versions: config is {version!r}, plugin supports "
            f"{list(SUPPORTED_VERSIONS)}",
            code=ERR_INCOMPATIBLE_VERSION,
        )


def version_result(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    version = str((config or {}).get("cniVersion") or SUPPORTED_VERSIONS[-1])
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def error_result(error: CniError, version: str | None = None) -> dict[str, Any]:
    cni_version = version if version in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    return {
        "cniVersion": cni_version,
        "code": error.code,
        "msg": error.msg,
        "details": error.details,
    }


@dataclass(frozen=True, slots=True)
class IPConfig:
    """One address of a result: ``address`` in CIDR form (``10.65.0.5/26``)."""

    address: str
    gateway: str | None = None
    interface: int | None = None

    @property
    def version(self) -> str:
        return "6" if ":" in self.address else "4"


@dataclass(frozen=True, slots=True)
class Route:
    dst: str
    gw: str | None = None


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    ips: Sequence[IPConfig] = ()
    routes: Sequence[Route] = ()
    interfaces: Sequence[Interface] = ()
    dns: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Result:
        """Read a result of any version (e.g. ``prevResult``) back into one shape."""
        ips: list[IPConfig] = []
        if "ips" in raw:
            for item in raw.get("ips") or []:
                ips.append(IPConfig(item["address"], item.get("gateway"), item.get("interface")))
        else:
            for family in ("ip4", "ip6"):
                if raw.get(family):
                    ips.append(IPConfig(raw[family]["ip"], raw[family].get("gateway")))
        routes = [Route(r["dst"], r.get("gw")) for r in raw.get("routes") or []]
        interfaces = [
            Interface(i.get("name", ""), i.get("mac", ""), i.get("sandbox", ""))
            for i in raw.get("interfaces") or []
        ]
        return cls(ips=ips, routes=routes, interfaces=interfaces, dns=dict(raw.get("dns") or {}))


def _route_json(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": route.dst}
    if route.gw:
        out["gw"] = route.gw
    return out


def render_result(result: Result, version: str) -> dict[str, Any]:
    """The result in the shape ``version`` defines."""
    check_version(version)
    if version in ("0.1.0", "0.2.0"):
        out: dict[str, Any] = {"cniVersion": version}
        for family, tag in (("4", "ip4"), ("6", "ip6")):
            first = next((ip for ip in result.ips if ip.version == family), None)
            if first is None:
                continue
            entry: dict[str, Any] = {"ip": first.address}
            if first.gateway:
                entry["gateway"] = first.gateway
            routes = [_route_json(r) for r in result.routes if (":" in r.dst) == (family == "6")]
            if routes:
                entry["routes"] = routes
            out[tag] = entry
        out["dns"] = dict(result.dns)
        return out
    with_version_field = version in ("0.3.0", "0.3.1", "0.4.0")
    out = {"cniVersion": version}
    if result.interfaces:
        out["interfaces"] = [
            {k: v for k, v in (("name", i.name), ("mac", i.mac), ("sandbox", i.sandbox)) if v}
            for i in result.interfaces
        ]
    ips = []
    for ip in result.ips:
        entry = {"address": ip.address}
        if with_version_field:
            entry = {"version": ip.version, **entry}
        if ip.gateway:
            entry["gateway"] = ip.gateway
        if ip.interface is not None:
            entry["interface"] = ip.interface
        ips.append(entry)
    out["ips"] = ips
    if result.routes:
        out["routes"] = [_route_json(r) for r in result.routes]
    out["dns"] = dict(result.dns)
    return out


def config_flag(value: Any, default: bool) -> bool:
    """Calico's ``"true"``/``"false"`` string flags (booleans accepted too)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def string_list(value: Any, field_name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise CniError(f"{field_name}: expected a list of strings", code=ERR_INVALID_NETWORK_CONFIG)


def determine_nodename(
    config: Mapping[str, Any], nodename_file_text: str | None, os_hostname: str
) -> str:
    """Calico's order: ``nodename`` > the nodename file > ``hostname`` > the OS host name.

    The caller reads the file (``config['nodename_file']``, default
    ``/var/lib/calico/nodename``) and passes its text, or None when it is absent.
    """
    if config.get("nodename"):
        return str(config["nodename"]).strip()
    if nodename_file_text and nodename_file_text.strip():
        return nodename_file_text.strip()
    if config.get("hostname"):
        return str(config["hostname"]).strip()
    return os_hostname.strip().lower()


DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
