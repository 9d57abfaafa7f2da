"""``calico``: the CNI plugin executable, a thin client.

Imports only the standard library (and the stdlib-only ``agent_protocol``) before it knows where
the work happens: if the node agent listens on its CNI socket (``CALICO_AGENT_SOCKET``, default
``/var/run/calico/cni.sock``) the call is forwarded there, where imports are warm and the etcd
connection is live; otherwise ``pycalico.cni.handler`` is imported and does the same work in
this process.  Either way the process prints what the handler answered (a result, or CNI error
JSON) and exits with its status.  ``VERSION`` is answered here, without either; ``-v`` prints
the plugin's version.

Not here: any CNI, IPAM or kernel logic (``pycalico.cni.handler``).  Invariant: once a call has
been handed to the agent, its answer is final (``agent_protocol``): no in-process retry.
"""

from __future__ import annotations

import sys

from pycalico.cni import entry

PLUGIN = "calico"
VERSION = entry.VERSION


def main(argv: list[str] | None = None) -> int:
    return entry.run(PLUGIN, "pycalico.cni.handler", argv)


if __name__ == "__main__":
    sys.exit(main())
