"""Felix's calculation graph: datastore updates in, ordered dataplane messages out.

PURE: no asyncio, subprocess, socket or etcd.  The daemon feeds ``CalcGraph`` with the syncer's
``(key, value | None)`` updates and hands ``flush()``'s messages (``pycalico.felix.messages``) to
the dataplane.  Modules, in pipeline order: ``graph`` (dispatch, local-endpoint filter),
``active_rules`` (active-rules calculator), ``labels`` (v3 → Felix labels and selectors),
``index`` (incremental label index), ``rules`` (rule scanner), ``ipsets`` (IP-set member index),
``policies`` (policy sorter/resolver), ``endpoints`` (endpoint messages), ``config`` (effective
FelixConfiguration), ``sequencer`` (coalescing, dependency order), ``stats`` (counters).
"""

from pycalico.felix.calc.graph import CalcGraph, key_of
from pycalico.felix.calc.sequencer import EventSequencer
from pycalico.felix.calc.stats import GraphStats, GraphSummary

__all__ = ["CalcGraph", "EventSequencer", "GraphStats", "GraphSummary", "key_of"]
