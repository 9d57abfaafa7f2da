"""pycalico.ipam: Calico's block-affinity IP address management over the datastore.

Modules: ``records`` (PURE: address types, Calico's IPAM vocabulary, and the block summary,
affinity, handle and config values), ``blocks`` (PURE: Calico's allocation block and the
per-block algorithms), ``keys`` (Calico's IPAM key layout), ``pools`` (which pools a request may
use, and the order a node walks a pool's blocks), ``reservations`` (PURE: the addresses
IPReservations keep from auto-assignment), ``api`` (errors, requests, results), ``store``
(datastore primitives and the two-phase block claim), ``release`` (releasing and the queries by
address and handle: a base class of ``IPAM``), ``allocator`` (``IPAM``: auto-assign, assign, and
all of ``release``), ``batching`` (combining a node's concurrent requests in a long-lived
allocator), ``check`` (the consistency check behind ``calicoctl ipam check``), ``check_report`` (PURE:
the report file that check writes and ``calicoctl ipam release --from-report`` reads).
"""
