"""The datastore ready flag: ClusterInformation ``default`` → "may Felix program the kernel?".

What it is: the pycalico counterpart of libcalico-go's ClusterInformation update processor,
which turns ``spec.datastoreReady`` into Felix's ``ReadyFlagKey``.  ``calicoctl datastore migrate
lock`` sets the flag false, ``unlock`` sets it true.  What it is not: the reaction to the flag
(the graph reports a change to not-ready through the sequencer; the daemon waits at start and
exits for a restart while running, as Go Felix does).

Invariants: only an explicit ``datastoreReady: false`` is "not ready".  A missing
ClusterInformation, a missing field or a value that does not decode (the stream delivers it as
a delete) counts as ready: pycalico's
Felix also runs where calico-node has not written a ClusterInformation (Go Felix, which always
runs behind calico-node's ``EnsureInitialized``, waits for an explicit ``true`` at start).
"""

from __future__ import annotations

import logging

from pycalico.model.node import ClusterInformation

log = logging.getLogger(__name__)

CLUSTER_INFORMATION_NAME = "default"

# Go Felix's log lines, so operators grepping for them find ours too.
WAITING_MESSAGE = "Waiting for datastore to be initialized (or migrated)"
BECAME_UNREADY_MESSAGE = "Datastore became unready, need to restart."
NOT_READY_STATUS = "datastore not ready (locked: ClusterInformation default datastoreReady=false)"


def datastore_ready(info: ClusterInformation | None) -> bool:
    """False only when ``info`` exists and says ``datastoreReady: false``."""
    return info is None or not info.datastore_locked
