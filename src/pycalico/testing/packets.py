"""Hand-made attack packets for root tests: IPIP, IPv6 router advertisements, forged ARP replies.

What it is: byte builders for the few packets a hostile workload would craft, a sender that
writes them from inside a namespace (raw IP or ``AF_PACKET`` sockets), and ``Sniffer``, a raw
socket opened inside a namespace that collects what arrives, so a test can say "this packet was
(or was not) delivered".  The kernel needs no ``ipip`` module: a raw IPv4 socket sends and
receives protocol-4 packets like any other.
What it is not: a general packet library, or a traffic generator.

Invariants: sockets are created inside the namespace (``netns.enter``) and keep it after the
thread returns; every socket is closed by its context manager, also on failure; ``Sniffer.wait``
waits for a packet with a deadline (never a fixed sleep).
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator

from pycalico.netns.namespace import enter

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IPPROTO_IPIP = 4
ICMPV6_ROUTER_SOLICIT = 133
ICMPV6_ROUTER_ADVERT = 134


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(source: str, destination: str, protocol: int, payload_length: int) -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton(destination)
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + payload_length, 0x1234, 0, 64, protocol, 0)
    header += addresses
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def udp_datagram(source: str, destination: str, port: int, payload: bytes) -> bytes:
    """An IPv4 UDP datagram (UDP checksum 0: allowed for IPv4)."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    return ipv4_header(source, destination, socket.IPPROTO_UDP, len(udp)) + udp


def ipip_packet(
    outer_source: str, outer_destination: str, inner_source: str, inner_destination: str,
    marker: bytes,
) -> bytes:  # fmt: skip
    """An IPv4-in-IPv4 packet whose inner UDP datagram carries ``marker``."""
    inner = udp_datagram(inner_source, inner_destination, 9, marker)
    return ipv4_header(outer_source, outer_destination, IPPROTO_IPIP, len(inner)) + inner


def send_ipv4_raw(namespace: str, packet: bytes) -> None:
    """Send a complete IPv4 packet (header included) from ``namespace``."""
    destination = socket.inet_ntoa(packet[16:20])
    with enter(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with sock:
        sock.sendto(packet, (destination, 0))


def router_advertisement(prefix: str) -> bytes:
    """An ICMPv6 RA (checksum left to the kernel) with a default-router lifetime of 1800 s and
    an on-link, autonomous prefix-information option for ``prefix`` (a /64)."""
    network = ipaddress.IPv6Network(prefix)
    ra = struct.pack("!BBHBBHII", ICMPV6_ROUTER_ADVERT, 0, 0, 64, 0, 1800, 0, 0)
    pio = struct.pack("!BBBBIII", 3, 4, network.prefixlen, 0xC0, 86400, 14400, 0)
    return ra + pio + network.network_address.packed


def router_solicitation() -> bytes:
    return struct.pack("!BBHI", ICMPV6_ROUTER_SOLICIT, 0, 0, 0)


def send_icmpv6(namespace: str, interface: str, destination: str, message: bytes) -> None:
    """Send one ICMPv6 message with hop limit 255 (as neighbour discovery requires)."""
    with enter(namespace):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        index = socket.if_nametoindex(interface)
    with sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.sendto(message, (destination, 0, 0, index))


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def arp_reply(sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    """An Ethernet frame: ARP reply "``sender_ip`` is at ``sender_mac``" to ``target_mac``
    (``ff:ff:ff:ff:ff:ff`` with ``target_ip == sender_ip`` makes it a gratuitous ARP)."""
    ethernet = mac_bytes(target_mac) + mac_bytes(sender_mac) + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
    arp += mac_bytes(sender_mac) + socket.inet_aton(sender_ip)
    arp += mac_bytes(target_mac) + socket.inet_aton(target_ip)
    return ethernet + arp


def send_frame(namespace: str, interface: str, frame: bytes) -> None:
    with enter(namespace):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    with sock:
        sock.bind((interface, 0))
        sock.send(frame)


class Sniffer:
    """A raw socket in a namespace; ``wait`` returns the first packet ``match`` accepts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def wait(self, match: Callable[[bytes], bool], timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                packet = self.sock.recv(65535)
                if match(packet):
                    return packet
        return None


@contextlib.contextmanager
def sniff(
    namespace: str, family: int, kind: int, protocol: int, interface: str = ""
) -> Iterator[Sniffer]:
    """``sniff(ns, AF_INET, SOCK_RAW, 4)`` sees IPIP packets delivered to ``ns``'s stack (after
    its netfilter input hook); ``AF_PACKET`` sees frames on the wire of ``interface``."""
    with enter(namespace):
        sock = socket.socket(family, kind, protocol)
    with sock:
        if interface and family == socket.AF_PACKET:
            sock.bind((interface, 0))
        elif interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        yield Sniffer(sock)
