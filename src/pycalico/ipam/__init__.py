"""pycalico.ipam: Calico's block-affinity IP address management over the datastore.

Modules: ``blocks`` (PURE: Calico's block, affinity, handle and config values and the per-block
algorithms), ``keys`` (Calico's IPAM key layout), ``pools`` (which pools a request may use, and
the order a node walks a pool's blocks), ``api`` (errors, requests, results), ``store``
(datastore primitives and the two-phase block claim), ``allocator`` (``IPAM``: auto-assign,
assign, release, queries), ``batching`` (combining a node's concurrent requests in a long-lived
allocator), ``check`` (the consistency check behind ``calicoctl ipam check``).
"""
