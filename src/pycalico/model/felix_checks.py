"""Single-field checks of FelixConfiguration that Calico's validator makes on fields we do not type.

What it is: a table from a FelixConfiguration wire name to a check of its value, for the ~200
Felix settings that ``FelixConfigurationSpec`` keeps as written (BPF, Wireguard, AWS, Windows,
route priorities, ...).  The facts are Calico 3.32's struct tags and CRD schema for those fields:
value sets (some matched in any capitalisation), number ranges, interface-name filters, regular
expressions, DNS labels.  What it is not: the typed fields' own checks (pydantic types and
``FelixConfigurationSpec.issues``) or Felix's reading of the values.

Invariants: a check returns ``None`` when the value is fine and a message otherwise, never raises;
a value of the wrong JSON type is reported, not converted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping

from pycalico.model.fields import label_name_problem

Check = Callable[[object], str | None]

_IFACE_FILTER = re.compile(r"^[a-zA-Z0-9:._+-]{1,15}$")


def _one_of(*values: str, any_case: bool = False) -> Check:
    allowed = {v.lower() for v in values} if any_case else set(values)

    def check(value: object) -> str | None:
        if isinstance(value, str) and (value.lower() if any_case else value) in allowed:
            return None
        return f"{value!r} is not one of {', '.join(values)}"

    return check


def _whole(low: int, high: int | None = None) -> Check:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{value!r} is not a whole number"
        if value < low or (high is not None and value > high):
            top = "" if high is None else f" and at most {high}"
            return f"{value} must be at least {low}{top}"
        return None

    return check


def _regexp(value: object) -> str | None:
    if not isinstance(value, str):
        return f"{value!r} is not a regular expression"
    try:
        re.compile(value)
    except re.error as error:
        return f"{value!r} is not a regular expression: {error}"
    return None


def _iface_filter(value: object) -> str | None:
    if isinstance(value, str) and _IFACE_FILTER.match(value):
        return None
    return f"{value!r} is not an interface name or prefix (1-15 of letters, digits, ':._+-')"


def _iface_filters(value: object) -> str | None:
    if not isinstance(value, list):
        return "must be a list of interface names or prefixes"
    for item in value:
        problem = _iface_filter(item)
        if problem:
            return problem
    return None


_REGION_MAX = 63 - len("openstack-region-")  # it becomes part of a namespace name


def _region(value: object) -> str | None:
    if not isinstance(value, str):
        return f"{value!r} is not a region name"
    if len(value) > _REGION_MAX:
        return f"is too long by {len(value) - _REGION_MAX} characters (at most {_REGION_MAX})"
    return label_name_problem(value) if value else None


_ENABLED_DISABLED = _one_of("Enabled", "Disabled")
_ROUTE_PRIORITY = _whole(1, 2147483646)
_PORT = _whole(1, 65535)
_PORT_OR_ZERO = _whole(0, 65535)
_GO_RUNTIME = _whole(-1)

CHECKS: Mapping[str, Check] = {
    "openstackRegion": _region,
    "iptablesNATOutgoingInterfaceFilter": _iface_filter,
    "bpfForceTrackPacketsFromIfaces": _iface_filters,
    "logDebugFilenameRegex": _regexp,
    "nftablesFlowTableDataIfacePattern": _regexp,
    "bpfDataIfacePattern": _regexp,
    "bpfL3IfacePattern": _regexp,
    "bpfDisableGROForIfaces": _regexp,
    "mtuIfacePattern": _regexp,
    "bpfExternalServiceMode": _one_of("Tunnel", "DSR", any_case=True),
    "bpfMapSizeConntrackScaling": _one_of("Disabled", "DoubleIfFull", any_case=True),
    "bpfEnforceRPF": _one_of("Disabled", "Strict", "Loose", any_case=True),
    "bpfExtToServiceConnmark": _whole(0, 4294967295),
    "bpfOverlayHostSourceIP": _one_of("TunnelAddress", "HostAddress"),
    "bpfJITHardening": _one_of("Auto", "Strict"),
    "bpfConntrackLogLevel": _one_of("Off", "Debug"),
    "bpfConntrackMode": _one_of("Auto", "Userspace", "BPFProgram"),
    "bpfConnectTimeLoadBalancing": _one_of("TCP", "Enabled", "Disabled"),
    "bpfHostNetworkedNATWithoutCTLB": _ENABLED_DISABLED,
    "bpfAttachType": _one_of("TC", "TCX", "Netkit"),
    "bpfRedirectToPeer": _ENABLED_DISABLED,
    "bpfProfiling": _ENABLED_DISABLED,
    "bpfKubeProxyHealthzPort": _PORT_OR_ZERO,
    "bpfMaglevMaxEndpointsPerService": _whole(1, 3000),
    "bpfMaglevMaxServices": _whole(1, 3000),
    "bpfMapSizeConntrackCleanupQueue": _whole(1),
    "prometheusMetricsClientAuth": _one_of(
        "RequireAndVerifyClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "NoClientCert",
    ),
    "debugPort": _PORT_OR_ZERO,
    "ipv4NormalRoutePriority": _ROUTE_PRIORITY,
    "ipv4ElevatedRoutePriority": _ROUTE_PRIORITY,
    "ipv6NormalRoutePriority": _ROUTE_PRIORITY,
    "ipv6ElevatedRoutePriority": _ROUTE_PRIORITY,
    "wireguardListeningPort": _PORT,
    "wireguardListeningPortV6": _PORT,
    "wireguardRoutingRulePriority": _whole(1, 32765),
    "awsSrcDstCheck": _one_of("DoNothing", "Enable", "Disable"),
    "localSubnetL2Reachability": _one_of("Disabled", "PodsAndLoadBalancers"),
    "windowsManageFirewallRules": _ENABLED_DISABLED,
    "programClusterRoutes": _one_of("Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly"),
    "flowLogsLocalReporter": _ENABLED_DISABLED,
    "goGCThreshold": _GO_RUNTIME,
    "goMemoryLimitMB": _GO_RUNTIME,
    "goMaxProcs": _GO_RUNTIME,
}


def felix_field_issues(fields: Mapping[str, object], path: str) -> Iterator[tuple[str, str]]:
    """The problems of the listed fields present in ``fields`` (wire name -> value)."""
    for wire, value in fields.items():
        check = CHECKS.get(wire)
        if check is None or value is None:
            continue
        problem = check(value)
        if problem:
            yield f"{path}.{wire}", problem
