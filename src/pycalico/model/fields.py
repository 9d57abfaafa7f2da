"""Value types and single-value checks shared by the v3 kinds: names, labels, CIDRs, ports,
protocols, AS numbers, durations, selectors.

What it is: pydantic ``Annotated`` types that *normalise* a value the way Calico's Go types do on
unmarshal (``Port`` "80:80" becomes 80, protocol names get Calico's spelling, AS-dot "1.10"
becomes 65546, Go durations are re-rendered "5m" -> "5m0s"), plus pure check functions that
return a message (``None`` when fine) for the semantic validation pass.

What it is not: cross-field rules (those live with each kind) or selector parsing (that is
``pycalico.model.selectors``; ``selector_problem`` only wraps it).

Invariants: every normaliser is idempotent (a stored, already-normalised value decodes to itself),
and raises ``ValueError`` with a message naming the problem, never anything else.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field, PlainSerializer

from pycalico.model.selectors import SelectorParseError, parse

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# --- names and labels (k8s apimachinery rules, as Calico's validator applies them) ------------

_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = f"{_LABEL_FMT}(\\.{_LABEL_FMT})*"
NAME_RE: Final = re.compile(f"^{_SUBDOMAIN_FMT}$")
LABEL_NAME_RE: Final = re.compile(f"^{_LABEL_FMT}$")
# NetworkPolicy: a label, label.label, or the Kubernetes-policy prefixes knp./ossg.default.<name>.
NETWORK_POLICY_NAME_RE: Final = re.compile(
    f"^(({_LABEL_FMT})(\\.{_LABEL_FMT})?|((knp|ossg)\\.default\\.({_SUBDOMAIN_FMT})))$"
)
GLOBAL_NETWORK_POLICY_NAME_RE: Final = re.compile(f"^({_LABEL_FMT}\\.)?{_LABEL_FMT}$")
CONTAINER_ID_RE: Final = re.compile("^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
INTERFACE_RE: Final = re.compile("^[a-zA-Z0-9_.-]{1,15}$")
_QUALIFIED_NAME_PART = re.compile("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_PORT_NAME_RE = re.compile("^[-a-z0-9]+$")
_MAC_RE = re.compile("^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\\1[0-9A-Fa-f]{2}){4}$")

SUBDOMAIN_MAX = 253
LABEL_MAX = 63

_NAME_HINT = "lower case letters, digits, '-' and '.', starting and ending with a letter or digit"


def name_problem(name: str, *, max_length: int = SUBDOMAIN_MAX) -> str | None:
    """A DNS-1123 subdomain (Calico's rule for most resource names)."""
    if not name:
        return "is required"
    if len(name) > max_length:
        return f"is too long by {len(name) - max_length} characters (at most {max_length})"
    if not NAME_RE.match(name):
        return f"{name!r} is not a valid name: use {_NAME_HINT}"
    return None


def label_name_problem(name: str) -> str | None:
    """A DNS-1123 label: no dots (tier names)."""
    if not name:
        return "is required"
    if len(name) > LABEL_MAX:
        return f"is too long by {len(name) - LABEL_MAX} characters (at most {LABEL_MAX})"
    if not LABEL_NAME_RE.match(name):
        return (
            f"{name!r} is not a valid name: use lower case letters, digits and '-', "
            "starting and ending with a letter or digit (no dots)"
        )
    return None


def qualified_name_problem(key: str) -> str | None:
    """A label or annotation key: ``[prefix/]name`` (k8s IsQualifiedName)."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or name_problem(prefix) is not None):
        return f"key {key!r} has an invalid prefix: it must be a DNS subdomain"
    if not name or len(name) > LABEL_MAX or not _QUALIFIED_NAME_PART.match(name):
        return (
            f"key {key!r} is not valid: the name part must be 1-63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > LABEL_MAX or not _LABEL_VALUE_RE.match(value):
        return (
            f"value {value!r} is not valid: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def port_name_problem(name: str) -> str | None:
    """k8s IsValidPortName: 1-15 of [-a-z0-9], at least one letter, no '--', no edge '-'."""
    if (
        not 1 <= len(name) <= 15
        or not _PORT_NAME_RE.match(name)
        or not re.search("[a-z]", name)
        or "--" in name
        or name.startswith("-")
        or name.endswith("-")
    ):
        return (
            f"{name!r} is not a valid port name: use 1-15 lower case letters, digits and '-', "
            "with at least one letter"
        )
    return None


def interface_problem(name: str, *, allow_wildcard: bool = False) -> str | None:
    if allow_wildcard and name == "*":
        return None
    if not INTERFACE_RE.match(name):
        return f"{name!r} is not a valid interface name (1-15 of letters, digits, '_', '.', '-')"
    return None


def mac_problem(mac: str) -> str | None:
    if not _MAC_RE.match(mac):
        return f"{mac!r} is not a MAC address"
    return None


# --- addresses and networks -------------------------------------------------------------------


def parse_cidr_or_ip(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """Calico's ParseCIDROrIP: "10.0.0.1/16" or a bare address (a full-length prefix)."""
    if not isinstance(text, str) or not text or text.count("/") > 1:
        return None
    _, _, prefix = text.partition("/")
    if prefix and not prefix.isdigit():
        return None  # ipaddress would accept a dotted netmask; Calico does not
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        return None


def _family_word(version: int) -> str:
    return "IPv4" if version == 4 else "IPv6"


def network_problem(text: str, version: int | None = None) -> str | None:
    """A strictly masked network (or a bare address); ``version`` restricts the family."""
    parsed = parse_cidr_or_ip(text)
    if parsed is None:
        return f"{text!r} is not a valid CIDR"
    if version is not None and parsed.version != version:
        return f"{text} is not an {_family_word(version)} network"
    if parsed.ip != parsed.network.network_address:
        return f"{text} is not a network address: use {parsed.network}"
    return None


def cidr_problem(text: str, version: int | None = None) -> str | None:
    """An address with a prefix, not necessarily masked (node addresses, network sets)."""
    parsed = parse_cidr_or_ip(text)
    if parsed is None:
        return f"{text!r} is not a valid CIDR"
    if version is not None and parsed.version != version:
        return f"{text} is not an {_family_word(version)} CIDR"
    return None


def ip_problem(text: str, version: int | None = None) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return f"{text!r} is not a valid IP address"
    if version is not None and address.version != version:
        return f"{text} is not an {_family_word(version)} address"
    return None


def network_of(text: str) -> IPNetwork | None:
    parsed = parse_cidr_or_ip(text)
    return None if parsed is None else parsed.network


def split_ip_port(text: str) -> tuple[str, int | None] | None:
    """A BGP peer address: ``ip``, ``ipv4:port`` or ``[ipv6]:port``; None if malformed."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)", text) or re.fullmatch(
        r"(\d+\.\d+\.\d+\.\d+):(\d+)", text
    )
    if match:
        port = int(match.group(2))
        if not 1 <= port <= 65535 or ip_problem(match.group(1)) is not None:
            return None
        return match.group(1), port
    if ip_problem(text) is not None:
        return None
    return text, None


# --- selectors --------------------------------------------------------------------------------


def selector_problem(text: str) -> str | None:
    try:
        parse(text)
    except SelectorParseError as error:
        return f"selector {text!r} does not parse: {error}"
    return None


# --- protocols --------------------------------------------------------------------------------

PROTOCOL_NAMES: Final = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
_PROTOCOL_BY_LOWER = {name.lower(): name for name in PROTOCOL_NAMES}
_PORT_PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}


def _normalize_protocol(value: object) -> int | str:
    if isinstance(value, bool):
        raise ValueError("protocol must be a name or a number 1-255")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise ValueError(f"protocol number {value} is out of range 1-255")
        return value
    if isinstance(value, str):
        name = _PROTOCOL_BY_LOWER.get(value.lower())
        if name is None:
            raise ValueError(
                f"protocol {value!r} is not one of {', '.join(PROTOCOL_NAMES)} or a number 1-255"
            )
        return name
    raise ValueError("protocol must be a name or a number 1-255")


# Canonical values (all stored ones) match the first two branches inside pydantic's compiled
# core; only other spellings reach the Python normaliser.  This keeps decoding stored values cheap.
Protocol = Annotated[
    Literal["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite"]
    | Annotated[int, Field(ge=1, le=255, strict=True)]
    | Annotated[int | str, BeforeValidator(_normalize_protocol)],
    Field(union_mode="left_to_right"),
]
"""A protocol name (Calico's spelling, matched case-insensitively) or a number 1-255."""


def protocol_supports_ports(protocol: int | str | None) -> bool:
    if protocol is None:
        return False
    if isinstance(protocol, int):
        return protocol in _PORT_PROTOCOL_NUMBERS.values()
    return protocol in _PORT_PROTOCOL_NUMBERS


def protocol_is(protocol: int | str | None, name: str) -> bool:
    """True if ``protocol`` is ``name`` by name or by number (ICMP=1, ICMPv6=58)."""
    numbers = {"ICMP": 1, "ICMPv6": 58, **_PORT_PROTOCOL_NUMBERS}
    return protocol == name or (isinstance(protocol, int) and protocol == numbers.get(name))


# --- ports ------------------------------------------------------------------------------------


def _port_number(text: str, whole: str) -> int:
    if not text.isdigit():
        raise ValueError(f"port range {whole!r} must be 'min:max' with numbers 1-65535")
    number = int(text)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} in {whole!r} is out of range 1-65535")
    return number


def _normalize_port(value: object) -> int | str:
    if isinstance(value, bool):
        raise ValueError("port must be a number, a 'min:max' range or a port name")
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is out of range 1-65535")
        return value
    if not isinstance(value, str):
        raise ValueError("port must be a number, a 'min:max' range or a port name")
    if value.isdigit():
        return _normalize_port(int(value))
    if ":" in value:
        low_text, _, high_text = value.partition(":")
        low = _port_number(low_text, value)
        high = _port_number(high_text, value)
        if low > high:
            raise ValueError(f"port range {value!r} has min greater than max")
        # Calico prints a one-port range as the number itself.
        return low if low == high else f"{low}:{high}"
    problem = port_name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Port = Annotated[
    Annotated[int, Field(ge=1, le=65535, strict=True)]
    | Annotated[int | str, BeforeValidator(_normalize_port)],
    Field(union_mode="left_to_right"),
]
"""A port (1-65535), a range "min:max", or a named port (resolved against endpoint ports)."""


def _port_number_only(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError("port must be a number 1-65535")
    return value


PortNumber = Annotated[int, BeforeValidator(_port_number_only)]

# --- AS numbers -------------------------------------------------------------------------------


def _parse_as_number(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("AS number must be a number or AS-dot 'high.low'")
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            value = int(text)
        elif re.fullmatch(r"\d+\.\d+", text):
            high, low = (int(part) for part in text.split("."))
            if high > 0xFFFF or low > 0xFFFF:
                raise ValueError(f"AS-dot number {text!r} has a part above 65535")
            return (high << 16) | low
        else:
            raise ValueError(f"{value!r} is not an AS number (a number or AS-dot 'high.low')")
    if not isinstance(value, int):
        raise ValueError("AS number must be a number or AS-dot 'high.low'")
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"AS number {value} is out of range 0-4294967295")
    return value


ASNumber = Annotated[int, BeforeValidator(_parse_as_number)]
"""A 32-bit AS number; AS-dot input ("1.10") is stored as its 32-bit value, as Calico does."""

# --- Go durations (metav1.Duration) -----------------------------------------------------------

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Nanoseconds in a Go duration string ("1h30m", "2.5s", "0")."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"{text!r} is not a duration (like '90s', '5m', '1h30m')")
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(body):
        raise ValueError(f"{text!r} is not a duration (like '90s', '5m', '1h30m')")
    nanoseconds = round(total)
    return -nanoseconds if text.startswith("-") else nanoseconds


def format_go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String()``: "1h0m0s", "1m30s", "1.5s", "250ms", "0s"."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    value = abs(nanoseconds)
    if value < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if value >= size:
                return sign + _fraction(value, size) + unit
    hours, rest = divmod(value, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = _fraction(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _fraction(value: int, size: int) -> str:
    whole, rest = divmod(value, size)
    if not rest:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}.{str(rest).zfill(digits).rstrip('0')}"


def _normalize_duration(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a duration must be a string like '90s', '5m' or '1h30m'")
    return format_go_duration(parse_go_duration(value))


class _GoDecoded:
    """The type of ``GO_DECODED``."""

    def __repr__(self) -> str:
        return "GO_DECODED"


GO_DECODED: Final = _GoDecoded()
"""``Annotated`` metadata for a ``str`` whose Go type decodes its own JSON (``metav1.Duration``,
``metav1.Time``): calicoctl does not turn a YAML number into a string for it, so neither does
``pycalico.model.manifest``."""

Duration = Annotated[str, BeforeValidator(_normalize_duration), GO_DECODED]
"""A Go duration, stored in Go's own rendering ("5m" is stored as "5m0s", as Calico does)."""

# --- value sets matched in any capitalisation -------------------------------------------------


def any_case(*values: str) -> BeforeValidator:
    """For a ``Literal`` whose CRD pattern is ``^(?i)(A|B)?$``: any capitalisation is accepted, and
    stored in the canonical spelling (Felix and confd compare the canonical one)."""
    by_lower = {value.lower(): value for value in values}

    def canonical(value: object) -> object:
        return by_lower.get(value.lower(), value) if isinstance(value, str) else value

    return BeforeValidator(canonical)


# --- policy and tier order --------------------------------------------------------------------


def _order_out(value: float) -> float | int:
    # Go prints a float64 that holds a whole number without a fraction ("order: 100").
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


Order = Annotated[float, PlainSerializer(_order_out)]
"""A policy or tier order: lower runs first, unset runs last."""
