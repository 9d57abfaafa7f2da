"""NetworkPolicy ports in Calico's terms: parsing, protocol names and range merging.

Calico's facts followed here:

* A port is parsed from its text (an int port is its decimal text): all digits is one port
  (at most 65535); ``<digits>:<digits>`` a range whose minimum is not above its maximum; anything
  else a named port, which must match ``[a-zA-Z0-9_.-]{1,128}``.  ``endPort`` is appended as
  ``:<endPort>`` before parsing, so a named port with an ``endPort`` does not parse.
* A protocol is matched case-insensitively against Calico's names (TCP, UDP, ICMP, ICMPv6, SCTP,
  UDPLite) and keeps Calico's spelling; a protocol that is not one of them is kept as given.
* ``simplify_ports`` covers a list of ports with the fewest ranges: named ports first, in their
  order, then the numbers merged into ascending ranges (duplicates and overlaps absorbed).  A list
  with at most one number is returned unchanged.

A port value is an ``int`` (one port), a ``"min:max"`` string (a range) or a name, as in the
Calico model's wire form; a one-port range is written as the number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PortValue = int | str

CALICO_PROTOCOLS = ("UDP", "TCP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
_BY_LOWER = {name.lower(): name for name in CALICO_PROTOCOLS}
_DIGITS = re.compile(r"\d+")
_RANGE = re.compile(r"(\d+):(\d+)")
_PORT_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_MAX_PORT = 65535


class PortError(ValueError):
    """A NetworkPolicy port that Calico cannot represent."""


def protocol_name(protocol: str) -> str:
    """Calico's spelling of ``protocol`` (case-insensitive match), else ``protocol`` itself."""
    return _BY_LOWER.get(protocol.lower(), protocol)


def _number(text: str, what: str, whole: str) -> int:
    value = int(text)
    if value > _MAX_PORT:
        raise PortError(f"{what} in {whole!r} is above {_MAX_PORT}")
    return value


def _range(low: int, high: int) -> PortValue:
    return low if low == high else f"{low}:{high}"


def parse_port(text: str) -> PortValue:
    """One port, a range or a name, from the text Calico builds (``port[:endPort]``)."""
    if _DIGITS.fullmatch(text):
        return _number(text, "the port number", text)
    match = _RANGE.fullmatch(text)
    if match:
        low = _number(match.group(1), "the range's first port", text)
        high = _number(match.group(2), "the range's last port", text)
        if low > high:
            raise PortError(f"port range {text!r} starts above its end")
        return _range(low, high)
    if not _PORT_NAME.fullmatch(text):
        raise PortError(
            f"{text!r} is not a port number, a 'min:max' range or a port name "
            "(letters, digits, '_', '.', '-'; at most 128)"
        )
    return text


def _bounds(port: PortValue) -> tuple[int, int]:
    if isinstance(port, int):
        return port, port
    low, _, high = port.partition(":")
    return int(low), int(high)


def _is_name(port: PortValue) -> bool:
    return isinstance(port, str) and not _RANGE.fullmatch(port)


def simplify_ports(ports: Sequence[PortValue]) -> list[PortValue]:
    """The fewest ranges covering ``ports``; see the module docstring for the order."""
    spans = [_bounds(port) for port in ports if not _is_name(port)]
    if sum(high - low + 1 for low, high in spans) <= 1:
        return list(ports)  # nothing to merge: Calico keeps the list as it was
    merged: list[PortValue] = [port for port in ports if _is_name(port)]
    numbers = sorted({n for low, high in spans for n in range(low, high + 1)})
    start = previous = numbers[0]
    for number in numbers[1:]:
        if number > previous + 1:
            merged.append(_range(start, previous))
            start = number
        previous = number
    merged.append(_range(start, previous))
    return merged
