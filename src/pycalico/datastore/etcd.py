"""``EtcdKVStore``: the ``KVStore`` protocol over a real etcd v3 cluster.

It speaks etcd's gRPC API through aetcd's generated stubs (``aetcd.rpc``) on long-lived
``grpc.aio`` channels, one per endpoint, rather than through ``aetcd.Client``: the client lacks
ranges at a revision, TLS and several endpoints, and the stubs cost less per call.

This module is the datastore's only I/O towards etcd.  It is not the resource layer
(``resources``) and does not interpret keys or values.

Invariants:

* Writes follow Calico's etcdv3 backend: create = ``If(Version==0) Put Else Get``; update and
  guarded delete = ``If(ModRevision==rev) ... Else Get``, so a lost race reports the current
  value.  Returned revisions are the transaction's header revision; read revisions are the
  key's mod revision.
* Every gRPC failure is translated here, once, into ``pycalico.datastore.api`` errors with the
  gRPC error chained as ``__cause__``.
* With several endpoints, an unavailable member makes the call move to the next one; calls retry
  (with backoff) until ``retry_timeout`` runs out, then raise ``DatastoreUnavailable``.  Writes
  are retried only on ``UNAVAILABLE`` (the request did not take effect), never on a timeout or
  a connection torn mid-call (it may have taken effect).
* A watch resumes on another endpoint from the revision after the last event it delivered, so
  a member going away is invisible to the consumer unless every member stays away past
  ``retry_timeout`` (``DatastoreUnavailable``) or history was compacted meanwhile
  (``CompactedError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from pycalico.datastore.api import (
    CompactedError,
    DatastoreError,
    DatastoreFull,
    DatastoreUnavailable,
    EventType,
    KeyAlreadyExists,
    KeyNotFound,
    KeyValue,
    KVEvent,
    Lease,
    ListResult,
    RevisionConflict,
    TxnConflict,
    TxnDelete,
    TxnOp,
    ValueTooLarge,
    check_commit,
)
from pycalico.datastore.config import DatastoreConfig, endpoint_target

T = TypeVar("T")

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
# A connection torn mid-call surfaces as UNAVAILABLE, or as INTERNAL/UNKNOWN ("Internal error
# from Core", "Stream removed"): all worth another endpoint for a read or a watch.
_READ_RETRY_CODES = frozenset(
    {_UNAVAILABLE, _DEADLINE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)
# etcd refuses a watch on a member cut off from the leader only when asked to.
_WATCH_METADATA = (("hasleader", "true"),)
_MAX_MESSAGE = 512 * 1024 * 1024
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    # gRPC's default reconnect backoff (1 s, growing to 120 s) would keep a restarted member
    # unused for minutes; loopback and LAN members deserve a quick retry.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Keepalive pings detect a dead member under a long-lived watch.  Only while a call is
    # open: etcd's server policy does not permit pings without streams and answers them with
    # GOAWAY too_many_pings, dropping an idle connection it had no reason to drop.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    ca_cert_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class _Connection:
    """One endpoint's channel and stubs; created lazily, closed with the store."""

    def __init__(self, endpoint: str, tls: TLSFiles | None) -> None:
        self.endpoint = endpoint
        target, secure = endpoint_target(endpoint)
        if secure:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.ca_cert_file) if tls else None,
                private_key=_read(tls.key_file) if tls else None,
                certificate_chain=_read(tls.cert_file) if tls else None,
            )
            self.channel = grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=kv.key.decode(),
        value=kv.value,
        revision=kv.mod_revision,
        create_revision=kv.create_revision,
        lease=kv.lease,
    )


def translate(
    error: BaseException, *, key: str = "", size: int = 0, op: str = ""
) -> DatastoreError:
    """Map a gRPC/client exception to the datastore error tree (the caller chains it)."""
    if isinstance(error, DatastoreError):
        return error
    if isinstance(error, grpc.aio.AioRpcError):
        code = error.code()
        details = error.details() or ""
        if code == grpc.StatusCode.INVALID_ARGUMENT and "too large" in details:
            return ValueTooLarge(key, size)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
            return ValueTooLarge(key, size)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "space exceeded" in details:
            return DatastoreFull(key)
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return CompactedError(0, 0)
        if code == grpc.StatusCode.NOT_FOUND and "lease" in details:
            return KeyNotFound(key)
        if code in _READ_RETRY_CODES:
            return DatastoreUnavailable(f"etcd {op} {key}: {code.name}: {details}".strip())
        return DatastoreError(f"etcd {op} {key} failed: {code.name}: {details}")
    return DatastoreError(f"etcd {op} {key} failed: {type(error).__name__}: {error}")


class EtcdKVStore:
    """A ``KVStore`` over one or more etcd endpoints (members of one cluster)."""

    def __init__(
        self,
        endpoints: Sequence[str] | str = ("http://127.0.0.1:2379",),
        *,
        tls: TLSFiles | None = None,
        timeout: float = 10.0,
        retry_timeout: float = 5.0,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [part.strip() for part in endpoints.split(",") if part.strip()]
        if not endpoints:
            raise DatastoreError("etcd endpoints: at least one endpoint is required")
        for endpoint in endpoints:
            endpoint_target(endpoint)
        self.endpoints = tuple(endpoints)
        self.tls = tls
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self._connections: dict[str, _Connection] = {}
        self._current = 0
        self._closed = False

    @classmethod
    def from_config(cls, config: DatastoreConfig, **options: Any) -> EtcdKVStore:
        tls = None
        if config.etcd_ca_cert_file or config.etcd_cert_file or config.etcd_key_file:
            tls = TLSFiles(config.etcd_ca_cert_file, config.etcd_cert_file, config.etcd_key_file)
        return cls(config.etcd_endpoints, tls=tls, **options)

    # --- connections and retries ------------------------------------------------------------

    def _connection(self) -> _Connection:
        if self._closed:
            raise DatastoreError("the etcd store is closed")
        endpoint = self.endpoints[self._current % len(self.endpoints)]
        connection = self._connections.get(endpoint)
        if connection is None:
            connection = self._connections[endpoint] = _Connection(endpoint, self.tls)
        return connection

    def _fail_over(self, failed: _Connection) -> None:
        if self.endpoints[self._current % len(self.endpoints)] == failed.endpoint:
            self._current = (self._current + 1) % len(self.endpoints)

    async def _call(
        self,
        op: Callable[[_Connection], Awaitable[T]],
        *,
        name: str,
        key: str = "",
        size: int = 0,
        write: bool = False,
    ) -> T:
        deadline = time.monotonic() + self.retry_timeout
        delay = 0.05
        tried_this_round = 0
        while True:
            connection = self._connection()
            try:
                return await op(connection)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                retryable = code == _UNAVAILABLE or (code in _READ_RETRY_CODES and not write)
                if not retryable or time.monotonic() >= deadline:
                    raise translate(error, key=key, size=size, op=name) from error
                self._fail_over(connection)
                tried_this_round += 1
                if tried_this_round >= len(self.endpoints):
                    tried_this_round = 0
                    await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    delay = min(delay * 2, 1.0)
            except DatastoreError:
                raise
            except asyncio.CancelledError:
                raise
            except Exception as error:
                raise translate(error, key=key, size=size, op=name) from error

    async def close(self) -> None:
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            # Closing a broken channel must not hide the caller's error.
            with contextlib.suppress(Exception):
                await connection.close()

    async def __aenter__(self) -> EtcdKVStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- reads ------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        request = rpc.RangeRequest(key=key.encode())

        async def op(c: _Connection) -> Any:
            return await c.kv.Range(request, timeout=self.timeout)

        reply = await self._call(op, name="get", key=key)
        return _key_value(reply.kvs[0]) if reply.kvs else None

    async def list(self, prefix: str, *, revision: int | None = None) -> ListResult:
        raw = prefix.encode()
        request = rpc.RangeRequest(
            key=raw or b"\0", range_end=prefix_range_end(raw) if raw else b"\0"
        )
        if revision:
            request.revision = revision

        async def op(c: _Connection) -> Any:
            return await c.kv.Range(request, timeout=self.timeout)

        try:
            reply = await self._call(op, name="list", key=prefix)
        except CompactedError as error:
            raise CompactedError(revision or 0, error.compact_revision) from error.__cause__
        items = [_key_value(kv) for kv in reply.kvs]
        return ListResult(items=items, revision=revision or reply.header.revision)

    async def list_raw(self, prefix: str, *, revision: int | None = None) -> tuple[Any, int]:
        """The protobuf key-values of a prefix and the list revision, without conversion (for
        layers that decode straight from the wire objects)."""
        raw = prefix.encode()
        request = rpc.RangeRequest(key=raw, range_end=prefix_range_end(raw))
        if revision:
            request.revision = revision

        async def op(c: _Connection) -> Any:
            return await c.kv.Range(request, timeout=self.timeout)

        reply = await self._call(op, name="list", key=prefix)
        return reply.kvs, revision or reply.header.revision

    # --- writes -----------------------------------------------------------------------------

    async def _txn(self, request: Any, *, name: str, key: str, size: int = 0) -> Any:
        async def op(c: _Connection) -> Any:
            return await c.kv.Txn(request, timeout=self.timeout)

        return await self._call(op, name=name, key=key, size=size, write=True)

    async def create(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        raw = key.encode()
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=raw, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0
                )
            ],
            success=[rpc.RequestOp(request_put=_put(raw, value, lease))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=raw))],
        )
        reply = await self._txn(request, name="create", key=key, size=len(value))
        if reply.succeeded:
            revision: int = reply.header.revision
            return revision
        kvs = reply.responses[0].response_range.kvs
        raise KeyAlreadyExists(key, _key_value(kvs[0]) if kvs else None)

    async def update(
        self, key: str, value: bytes, *, revision: int, lease: Lease | None = None
    ) -> int:
        raw = key.encode()
        request = rpc.TxnRequest(
            compare=[_mod_equals(raw, revision)],
            success=[rpc.RequestOp(request_put=_put(raw, value, lease))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=raw))],
        )
        reply = await self._txn(request, name="update", key=key, size=len(value))
        if reply.succeeded:
            new_revision: int = reply.header.revision
            return new_revision
        kvs = reply.responses[0].response_range.kvs
        if not kvs:
            raise KeyNotFound(key)
        raise RevisionConflict(key, revision, _key_value(kvs[0]))

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        request = _put(key.encode(), value, lease)

        async def op(c: _Connection) -> Any:
            return await c.kv.Put(request, timeout=self.timeout)

        reply = await self._call(op, name="put", key=key, size=len(value), write=True)
        revision: int = reply.header.revision
        return revision

    async def delete(self, key: str, *, revision: int | None = None) -> KeyValue:
        raw = key.encode()
        delete = rpc.DeleteRangeRequest(key=raw, prev_kv=True)
        if revision is None:

            async def op(c: _Connection) -> Any:
                return await c.kv.DeleteRange(delete, timeout=self.timeout)

            reply = await self._call(op, name="delete", key=key, write=True)
            if not reply.prev_kvs:
                raise KeyNotFound(key)
            return _key_value(reply.prev_kvs[0])
        request = rpc.TxnRequest(
            compare=[_mod_equals(raw, revision)],
            success=[rpc.RequestOp(request_delete_range=delete)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=raw))],
        )
        txn = await self._txn(request, name="delete", key=key)
        if txn.succeeded:
            deleted = txn.responses[0].response_delete_range.prev_kvs
            if not deleted:
                raise KeyNotFound(key)
            return _key_value(deleted[0])
        kvs = txn.responses[0].response_range.kvs
        if not kvs:
            raise KeyNotFound(key)
        raise RevisionConflict(key, revision, _key_value(kvs[0]))

    async def commit(self, ops: Sequence[TxnOp]) -> int:
        check_commit(ops)
        compare = []
        success = []
        failure = []
        size = 0
        for op in ops:
            raw = op.key.encode()
            # A key that does not exist has mod revision 0 in etcd's comparison.
            compare.append(_mod_equals(raw, op.revision))
            if isinstance(op, TxnDelete):
                success.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=raw)))
            else:
                success.append(rpc.RequestOp(request_put=_put(raw, op.value, None)))
                size += len(op.value)
            failure.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=raw)))
        request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        reply = await self._txn(request, name="commit", key=ops[0].key, size=size)
        if reply.succeeded:
            revision: int = reply.header.revision
            return revision
        current = {}
        for op, response in zip(ops, reply.responses, strict=True):
            kvs = response.response_range.kvs
            current[op.key] = _key_value(kvs[0]) if kvs else None
        raise TxnConflict({op.key: op.revision for op in ops}, current)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many keys were deleted."""
        raw = prefix.encode()
        request = rpc.DeleteRangeRequest(
            key=raw or b"\0", range_end=prefix_range_end(raw) if raw else b"\0"
        )

        async def op(c: _Connection) -> Any:
            return await c.kv.DeleteRange(request, timeout=self.timeout)

        reply = await self._call(op, name="delete_prefix", key=prefix, write=True)
        deleted: int = reply.deleted
        return deleted

    async def current_revision(self) -> int:
        """The store's revision now (a cheap single-key range)."""
        request = rpc.RangeRequest(key=b"\0", count_only=True)

        async def op(c: _Connection) -> Any:
            return await c.kv.Range(request, timeout=self.timeout)

        reply = await self._call(op, name="revision")
        revision: int = reply.header.revision
        return revision

    async def compact(self, revision: int) -> None:
        """Discard history before ``revision`` (tests and maintenance)."""
        request = rpc.CompactionRequest(revision=revision, physical=True)

        async def op(c: _Connection) -> Any:
            return await c.kv.Compact(request, timeout=self.timeout)

        await self._call(op, name="compact", write=True)

    # --- leases -----------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> Lease:
        request = rpc.LeaseGrantRequest(TTL=ttl, ID=0)

        async def op(c: _Connection) -> Any:
            return await c.lease.LeaseGrant(request, timeout=self.timeout)

        reply = await self._call(op, name="grant_lease", write=True)
        if reply.error:
            raise DatastoreError(f"etcd grant_lease failed: {reply.error}")
        return Lease(id=reply.ID, ttl=reply.TTL)

    async def refresh_lease(self, lease: Lease) -> None:
        async def op(c: _Connection) -> Any:
            call = c.lease.LeaseKeepAlive(timeout=self.timeout)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease.id))
                return await call.read()
            finally:
                call.cancel()

        reply = await self._call(op, name="refresh_lease", key=_lease_name(lease))
        if reply is grpc.aio.EOF or reply.TTL <= 0:
            raise KeyNotFound(_lease_name(lease))

    async def revoke_lease(self, lease: Lease) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease.id)

        async def op(c: _Connection) -> Any:
            return await c.lease.LeaseRevoke(request, timeout=self.timeout)

        await self._call(op, name="revoke_lease", key=_lease_name(lease), write=True)

    # --- watch ------------------------------------------------------------------------------

    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[KVEvent]:
        return self._watch(prefix, start_revision)

    async def _watch(self, prefix: str, start_revision: int) -> AsyncIterator[KVEvent]:
        raw = prefix.encode()
        next_revision = start_revision
        deadline = time.monotonic() + self.retry_timeout
        delay = 0.05
        while True:
            connection = self._connection()
            create = rpc.WatchCreateRequest(
                key=raw or b"\0",
                range_end=prefix_range_end(raw) if raw else b"\0",
                start_revision=next_revision,
                prev_kv=True,
            )
            call = connection.watch.Watch(metadata=_WATCH_METADATA)
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                while True:
                    reply = await call.read()
                    if reply is grpc.aio.EOF:
                        raise DatastoreUnavailable(f"etcd watch {prefix}: stream closed")
                    if reply.compact_revision:
                        raise CompactedError(next_revision, reply.compact_revision)
                    if reply.canceled:
                        if "leader" in reply.cancel_reason:
                            # This member lost the cluster's leader: try another one.
                            raise DatastoreUnavailable(
                                f"etcd watch {prefix}: {reply.cancel_reason}"
                            )
                        raise DatastoreError(
                            f"etcd watch {prefix} cancelled: {reply.cancel_reason or 'no reason'}"
                        )
                    if reply.created and not next_revision:
                        # "From now" must survive a reconnect: pin it to the creation revision.
                        next_revision = reply.header.revision + 1
                    for event in reply.events:
                        kv = event.kv
                        if event.type == rpc.Event.DELETE:
                            kv_event = KVEvent(
                                type=EventType.DELETE,
                                key=kv.key.decode(),
                                value=None,
                                revision=kv.mod_revision,
                                previous=event.prev_kv.value if event.HasField("prev_kv") else None,
                            )
                        else:
                            kv_event = KVEvent(
                                type=EventType.PUT,
                                key=kv.key.decode(),
                                value=kv.value,
                                revision=kv.mod_revision,
                                previous=event.prev_kv.value if event.HasField("prev_kv") else None,
                                create_revision=kv.create_revision,
                            )
                        next_revision = kv.mod_revision + 1
                        yield kv_event
                    deadline = time.monotonic() + self.retry_timeout
                    delay = 0.05
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code not in _READ_RETRY_CODES or time.monotonic() >= deadline:
                    raise translate(error, key=prefix, op="watch") from error
                self._fail_over(connection)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except DatastoreUnavailable:
                if time.monotonic() >= deadline:
                    raise
                self._fail_over(connection)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                call.cancel()


def _put(key: bytes, value: bytes, lease: Lease | None) -> Any:
    return rpc.PutRequest(key=key, value=value, lease=lease.id if lease else 0)


def _mod_equals(key: bytes, revision: int) -> Any:
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision
    )


def _lease_name(lease: Lease) -> str:
    return f"lease {lease.id:x}"
