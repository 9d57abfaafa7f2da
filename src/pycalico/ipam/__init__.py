"""pycalico.ipam: Calico's block-affinity IP address management over the datastore.

``allocator.IPAM`` is the entry point; it is composed (no inheritance) of:

* ``store`` — the block store: datastore reads and compare-and-swap writes of config, pools,
  blocks, affinities and handles, the two-phase block claim, and a long-lived allocator's caches;
* ``planner`` (PURE) — request checks, which pools serve a family, block limits;
* ``assign`` — the allocator: auto-assign and assign a given address;
* ``release`` — the releaser: releasing by address or handle, and the queries by both;
* ``batching`` — combining a node's concurrent requests in a long-lived allocator, reached
  through one method (``NodeBatcher.submit``).

Below them: ``records`` (PURE: address types, Calico's IPAM vocabulary, block summary, affinity,
handle and config values), ``blocks`` (PURE: Calico's allocation block and the per-block
algorithms), ``keys`` (Calico's IPAM key layout), ``pools`` (which pools a request may use, and
the order a node walks a pool's blocks), ``reservations`` (PURE: the addresses IPReservations
keep from auto-assignment), ``api`` (errors, requests, results).  Beside them: ``check`` (the
consistency check behind ``calicoctl ipam check``) and ``check_report`` (PURE: the report file
that check writes and ``calicoctl ipam release --from-report`` reads).
"""
