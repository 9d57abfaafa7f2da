"""The `calicoctl get` table columns of every kind: headings (ps and wide) and cell renderers.

Pure: each cell is computed from a resource's wire form (the camelCase dict that
``encode_resource`` produces), so the columns do not depend on how the model spells its Python
attributes.  Headings, their order, and the way each value is printed follow calicoctl's
resource managers, including Go's ways of printing values (``true``/``false``, ``<nil>`` for an
unset pointer, ``1e+06`` for a float), so a table looks the same as under Calico.

Not here: laying cells out (``pycalico.ctl.output``), and fetching anything a cell needs from the
datastore (a ``TableContext`` carries such facts in, e.g. the cluster-wide AS number).

Invariants: every kind has a ``NAME`` column; namespaced kinds also have ``NAMESPACE``, which is
prepended only when the user asked for a namespace (``-n``/``-A``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Wire = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TableContext:
    """Facts from outside the resource that some cells show.

    ``default_as_number`` is the cluster-wide AS number that a Node without its own shows in
    brackets, as calicoctl does: BGPConfiguration ``default``'s ``asNumber``, 64512 when unset,
    ``unknown`` when the datastore could not be read.
    """

    default_as_number: str = "64512"


Cell = Callable[[Wire, TableContext], str]


@dataclass(frozen=True, slots=True)
class KindColumns:
    headings: tuple[str, ...]
    wide_headings: tuple[str, ...]
    cells: Mapping[str, Cell] = field(default_factory=dict)

    def all_headings(self) -> list[str]:
        return sorted(self.cells)


# --- Go value printing ----------------------------------------------------------------------


def go_float(value: float) -> str:
    """A float as Go's ``%v`` prints it: shortest digits, exponent form from 1e+06 up."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    sign, digit_tuple, exponent = Decimal(repr(float(value))).as_tuple()
    assert isinstance(exponent, int)
    digits = list(digit_tuple)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exponent += 1
    prefix = "-" if sign else ""
    if digits == [0]:
        return prefix + "0"
    decimal_point = len(digits) + exponent
    power = decimal_point - 1
    text = "".join(str(d) for d in digits)
    if power < -4 or power >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if decimal_point <= 0:
        return f"{prefix}0.{'0' * -decimal_point}{text}"
    if decimal_point >= len(text):
        return prefix + text + "0" * (decimal_point - len(text))
    return f"{prefix}{text[:decimal_point]}.{text[decimal_point:]}"


def go_value(value: Any) -> str:
    """Any wire value as Go's template engine prints the typed field behind it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + " ".join(go_value(v) for v in value.values()) + "}"
    return str(value)


def join(items: Any, separator: str = ",", max_length: int = 0) -> str:
    """calicoctl's ``join``/``joinAndTruncate``: maps become sorted ``k=v``; cut with ``...``."""
    if items is None:
        return ""
    if isinstance(items, Mapping):
        items = sorted(f"{k}={go_value(v)}" for k, v in items.items())
    if not isinstance(items, list | tuple):
        items = [items]
    out = ""
    for index, item in enumerate(items):
        if index:
            out += separator
        out += item if isinstance(item, str) else go_value(item)
        if max_length > 0 and len(out) > max_length:
            return out[: max_length - 3] + "..."
    return out


# --- wire accessors ---------------------------------------------------------------------------


def _meta(res: Wire) -> Wire:
    value = res.get("metadata")
    return value if isinstance(value, Mapping) else {}


def _spec(res: Wire) -> Wire:
    value = res.get("spec")
    return value if isinstance(value, Mapping) else {}


def _name(res: Wire, _: TableContext) -> str:
    return str(_meta(res).get("name", ""))


def _namespace(res: Wire, _: TableContext) -> str:
    return str(_meta(res).get("namespace") or "")


def _text(key: str, default: str = "") -> Cell:
    """A string field: empty (Go's zero value) when absent."""

    def cell(res: Wire, _: TableContext) -> str:
        value = _spec(res).get(key)
        return default if value in (None, "") else go_value(value)

    return cell


def _flag(key: str) -> Cell:
    """A plain Go bool: absent prints as ``false``."""

    def cell(res: Wire, _: TableContext) -> str:
        return go_value(bool(_spec(res).get(key, False)))

    return cell


def _pointer(key: str) -> Cell:
    """A Go pointer field printed bare: ``<nil>`` when unset."""

    def cell(res: Wire, _: TableContext) -> str:
        return go_value(_spec(res).get(key))

    return cell


def _pointer_or_dash(key: str) -> Cell:
    """``{{if .X}}{{.X}}{{else}}-{{end}}`` on a pointer: any set value prints, unset is ``-``."""

    def cell(res: Wire, _: TableContext) -> str:
        value = _spec(res).get(key)
        return "-" if value is None else go_value(value)

    return cell


def _number(key: str) -> Cell:
    """A Go integer: absent prints as ``0``."""

    def cell(res: Wire, _: TableContext) -> str:
        value = _spec(res).get(key)
        return "0" if value is None else go_value(value)

    return cell


def _joined(key: str, max_length: int = 0) -> Cell:
    def cell(res: Wire, _: TableContext) -> str:
        return join(_spec(res).get(key), ",", max_length)

    return cell


def _count(*keys: str) -> Cell:
    def cell(res: Wire, _: TableContext) -> str:
        return str(sum(len(_spec(res).get(k) or []) for k in keys))

    return cell


def _node_as_number(res: Wire, context: TableContext) -> str:
    bgp = _spec(res).get("bgp")
    if not isinstance(bgp, Mapping):
        return ""
    own = bgp.get("asNumber")
    return go_value(own) if own not in (None, "", 0) else f"({context.default_as_number})"


def _node_address(key: str) -> Cell:
    def cell(res: Wire, _: TableContext) -> str:
        bgp = _spec(res).get("bgp")
        return str(bgp.get(key) or "") if isinstance(bgp, Mapping) else ""

    return cell


def _peer_node(res: Wire, _: TableContext) -> str:
    spec = _spec(res)
    if spec.get("node"):
        return str(spec["node"])
    return str(spec.get("nodeSelector") or "(global)")


def _workload(res: Wire, _: TableContext) -> str:
    spec = _spec(res)
    return str(spec.get("workload") or spec.get("pod") or "")


def _nats(res: Wire, _: TableContext) -> str:
    nats = _spec(res).get("ipNATs") or []
    return ",".join(
        "{" + f"{n.get('internalIP', '')} {n.get('externalIP', '')}" + "}" for n in nats
    )


def _labels_to_apply(res: Wire, _: TableContext) -> str:
    return join(_spec(res).get("labelsToApply"), ",")


def _pod_selector(res: Wire, _: TableContext) -> str:
    """``{{.Spec.PodSelector}}``: Go prints a Kubernetes LabelSelector with its generated
    ``String()``: ``&LabelSelector{MatchLabels:map[string]string{k: v,},MatchExpressions:[...],}``."""
    selector = _spec(res).get("podSelector")
    selector = selector if isinstance(selector, Mapping) else {}
    labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    matched = "".join(f"{key}: {labels[key]}," for key in sorted(labels))
    requirements = "".join(
        f"LabelSelectorRequirement{{Key:{e.get('key', '')},Operator:{e.get('operator', '')},"
        f"Values:[{' '.join(e.get('values') or [])}],}},"
        for e in expressions
    )
    return (
        f"&LabelSelector{{MatchLabels:map[string]string{{{matched}}},"
        f"MatchExpressions:[]LabelSelectorRequirement{{{requirements}}},}}"
    )


# --- the kinds --------------------------------------------------------------------------------


def _kind(
    headings: Sequence[str],
    wide: Sequence[str],
    cells: Mapping[str, Cell],
    namespaced: bool = False,
) -> KindColumns:
    all_cells: dict[str, Cell] = {"NAME": _name, **cells}
    if namespaced:
        all_cells["NAMESPACE"] = _namespace
    return KindColumns(tuple(headings), tuple(wide), all_cells)


_POLICY_CELLS: dict[str, Cell] = {
    "TIER": _text("tier", "default"),
    "ORDER": _pointer("order"),
    "SELECTOR": _text("selector"),
}

COLUMNS: dict[str, KindColumns] = {
    "IPPool": _kind(
        ["NAME", "CIDR", "SELECTOR"],
        [
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
            "ASSIGNMENTMODE",
        ],
        {
            "CIDR": _text("cidr"),
            "NAT": _flag("natOutgoing"),
            "IPIPMODE": _text("ipipMode", "Never"),
            "VXLANMODE": _text("vxlanMode", "Never"),
            "DISABLED": _flag("disabled"),
            "DISABLEBGPEXPORT": _flag("disableBGPExport"),
            "SELECTOR": _text("nodeSelector"),
            "ASSIGNMENTMODE": _text("assignmentMode", "Automatic"),
        },
    ),
    "Node": _kind(
        ["NAME"],
        ["NAME", "ASN", "IPV4", "IPV6"],
        {
            "ASN": _node_as_number,
            "IPV4": _node_address("ipv4Address"),
            "IPV6": _node_address("ipv6Address"),
        },
    ),
    "WorkloadEndpoint": _kind(
        ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"],
        {
            "NODE": _text("node"),
            "ORCHESTRATOR": _text("orchestrator"),
            "WORKLOAD": _workload,
            "NETWORKS": _joined("ipNetworks"),
            "NATS": _nats,
            "PROFILES": _joined("profiles"),
            "INTERFACE": _text("interfaceName"),
        },
        namespaced=True,
    ),
    "NetworkPolicy": _kind(
        ["NAME", "TIER"], ["NAME", "TIER", "ORDER", "SELECTOR"], _POLICY_CELLS, namespaced=True
    ),
    "GlobalNetworkPolicy": _kind(
        ["NAME", "TIER"], ["NAME", "TIER", "ORDER", "SELECTOR"], _POLICY_CELLS
    ),
    "StagedNetworkPolicy": _kind(
        ["NAME", "TIER"], ["NAME", "TIER", "ORDER", "SELECTOR"], _POLICY_CELLS, namespaced=True
    ),
    "StagedGlobalNetworkPolicy": _kind(
        ["NAME", "TIER"], ["NAME", "TIER", "ORDER", "SELECTOR"], _POLICY_CELLS
    ),
    "StagedKubernetesNetworkPolicy": _kind(
        ["NAME"], ["NAME", "PODSELECTOR"], {"PODSELECTOR": _pod_selector}, namespaced=True
    ),
    "BGPPeer": _kind(
        ["NAME", "PEERIP", "NODE", "ASN"],
        ["NAME", "PEERIP", "NODE", "ASN"],
        {"PEERIP": _text("peerIP"), "NODE": _peer_node, "ASN": _number("asNumber")},
    ),
    "BGPConfiguration": _kind(
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        {
            "LOGSEVERITY": _text("logSeverityScreen"),
            "MESHENABLED": _pointer_or_dash("nodeToNodeMeshEnabled"),
            "ASNUMBER": _pointer_or_dash("asNumber"),
        },
    ),
    "BGPFilter": _kind(
        ["NAME", "NUMEXPORT", "NUMIMPORT"],
        ["NAME", "NUMEXPORT", "NUMIMPORT"],
        # Calico's API splits the rules by family; the counts cover both.
        {
            "NUMEXPORT": _count("exportV4", "exportV6"),
            "NUMIMPORT": _count("importV4", "importV6"),
        },
    ),
    "FelixConfiguration": _kind(["NAME"], ["NAME"], {}),
    "KubeControllersConfiguration": _kind(["NAME"], ["NAME"], {}),
    "ClusterInformation": _kind(
        ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"],
        ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"],
        {
            "CLUSTERGUID": _text("clusterGUID"),
            "CLUSTERTYPE": _text("clusterType"),
            "CALICOVERSION": _text("calicoVersion"),
            "DATASTOREREADY": _pointer("datastoreReady"),
        },
    ),
    "GlobalNetworkSet": _kind(["NAME"], ["NAME", "NETS"], {"NETS": _joined("nets", 80)}),
    "NetworkSet": _kind(["NAME"], ["NAME", "NETS"], {"NETS": _joined("nets", 80)}, namespaced=True),
    "HostEndpoint": _kind(
        ["NAME", "NODE"],
        ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
        {
            "NODE": _text("node"),
            "INTERFACE": _text("interfaceName"),
            "IPS": _joined("expectedIPs"),
            "PROFILES": _joined("profiles"),
        },
    ),
    "Profile": _kind(["NAME"], ["NAME", "LABELS"], {"LABELS": _labels_to_apply}),
    "Tier": _kind(["NAME", "ORDER"], ["NAME", "ORDER"], {"ORDER": _pointer("order")}),
    "IPAMConfiguration": _kind(
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"],
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"],
        {
            "STRICTAFFINITY": _flag("strictAffinity"),
            "AUTOALLOCATEBLOCKS": _flag("autoAllocateBlocks"),
            "MAXBLOCKSPERHOST": _number("maxBlocksPerHost"),
        },
    ),
    "IPReservation": _kind(["NAME"], ["NAME", "CIDRS"], {"CIDRS": _joined("reservedCIDRs", 80)}),
    "CalicoNodeStatus": _kind(
        ["NAME", "NODE"],
        ["NAME", "NODE", "CLASSES"],
        {"NODE": _text("node"), "CLASSES": _joined("classes")},
    ),
}


def columns_for(kind: str, namespaced: bool = False) -> KindColumns:
    """The columns of ``kind``; a kind calicoctl has no table for gets its name (+ namespace)."""
    known = COLUMNS.get(kind)
    if known is not None:
        return known
    return _kind(["NAME"], ["NAME"], {}, namespaced=namespaced)
