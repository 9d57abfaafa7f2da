"""A small blocking client for etcd's v3 JSON gateway (``/v3/kv/range`` & co), over urllib.

What it is: what the Neutron driver needs from etcd — get/list a prefix with the store revision,
put, delete, compare-and-swap transactions, leases, and a streaming watch — as plain blocking
HTTP, so it is safe inside neutron-server, whose sockets eventlet monkey-patches (no asyncio, no
gRPC, no threads of its own).  Standard library only: it runs in Neutron's virtualenv.
What it is not: pycalico's datastore adapter (``pycalico.datastore.etcd``, asyncio, aetcd),
which every other component uses.

Invariants: keys and values cross the wire base64-encoded and come back as ``str``/``bytes``;
every failure (connection, HTTP status, gateway error body) is an ``EtcdError`` naming the call;
``watch`` yields events in revision order and ends (raises) when the stream breaks, so the caller
re-lists and re-watches.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


class EtcdError(Exception):
    """An etcd gateway call failed; ``call`` names it."""

    def __init__(self, call: str, detail: str) -> None:
        super().__init__(f"etcd {call}: {detail}")
        self.call = call


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: bytes
    mod_revision: int


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def prefix_end(prefix: str) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(item.get("key")).decode(),
        value=_unb64(item.get("value")),
        mod_revision=int(item.get("mod_revision", 0)),
        lease=int(item.get("lease", 0)),
    )


class EtcdGateway:
    def __init__(self, endpoints: Sequence[str], timeout: float = 10.0) -> None:
        if not endpoints:
            raise ValueError("etcd_endpoints: at least one http(s)://host:port is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout

    def _open(self, path: str, body: dict[str, Any], timeout: float | None) -> Any:
        data = json.dumps(body).encode()
        error: Exception | None = None
        for endpoint in self.endpoints:
            request = urllib.request.Request(
                endpoint + path, data=data, headers={"Content-Type": "application/json"}
            )
            try:
                return urllib.request.urlopen(request, timeout=timeout or self.timeout)
            except urllib.error.HTTPError as failure:
                raise EtcdError(path, f"HTTP {failure.code}: {failure.read()[:300]!r}") from None
            except OSError as failure:
                error = failure
        raise EtcdError(path, f"no endpoint answered: {error}")

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._open(path, body, None) as response:
            try:
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
            except (ValueError, OSError) as failure:
                raise EtcdError(path, f"bad answer: {failure}") from None
        if "error" in answer:
            raise EtcdError(path, str(answer.get("message") or answer["error"]))
        return answer

    def get(self, key: str) -> KeyValue | None:
        found = self.call("/v3/kv/range", {"key": _b64(key)}).get("kvs") or []
        return _kv(found[0]) if found else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the store revision of that snapshot."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        answer = self.call("/v3/kv/range", body)
        revision = int(answer.get("header", {}).get("revision", 0))
        return [_kv(item) for item in answer.get("kvs") or []], revision

    def put(self, key: str, value: str | bytes, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.call("/v3/kv/put", body)

    def delete(self, key: str) -> bool:
        return int(self.call("/v3/kv/deleterange", {"key": _b64(key)}).get("deleted", 0)) > 0

    def _txn(self, compare: dict[str, Any], success: list[dict[str, Any]]) -> bool:
        answer = self.call("/v3/kv/txn", {"compare": [compare], "success": success})
        return bool(answer.get("succeeded", False))

    def put_if(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        """Put only if the key's mod revision is ``mod_revision`` (0: the key must not exist)."""
        request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            request["lease"] = str(lease)
        compare = {"key": _b64(key), "target": "MOD", "result": "EQUAL",
                   "mod_revision": str(mod_revision)}  # fmt: skip
        return self._txn(compare, [{"request_put": request}])

    def delete_if(self, key: str, mod_revision: int) -> bool:
        compare = {"key": _b64(key), "target": "MOD", "result": "EQUAL",
                   "mod_revision": str(mod_revision)}  # fmt: skip
        return self._txn(compare, [{"request_delete_range": {"key": _b64(key)}}])

    def grant(self, ttl: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def refresh(self, lease: int) -> bool:
        """Keep ``lease`` alive; False once it has expired."""
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> None:
        self.call("/v3/lease/revoke", {"ID": str(lease)})

    def watch(self, prefix: str, start_revision: int, timeout: float = 30.0) -> Iterator[Event]:
        """Events under ``prefix`` from ``start_revision`` on.  The stream ends (EtcdError) when
        no event or progress arrives within ``timeout`` or the connection breaks."""
        create = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                  "start_revision": str(start_revision), "progress_notify": True}  # fmt: skip
        response = self._open("/v3/watch", {"create_request": create}, timeout)
        with response:
            while True:
                try:
                    line = response.readline()
                except OSError as failure:
                    raise EtcdError("/v3/watch", f"stream broke: {failure}") from None
                if not line:
                    raise EtcdError("/v3/watch", "stream ended")
                result = json.loads(line).get("result", {})
                if result.get("canceled") or result.get("compact_revision"):
                    raise EtcdError("/v3/watch", f"watch cancelled: {result}")
                for event in result.get("events") or []:
                    kv = event.get("kv", {})
                    yield Event(event.get("type", "PUT"), _unb64(kv.get("key")).decode(),
                                _unb64(kv.get("value")), int(kv.get("mod_revision", 0)))  # fmt: skip
