"""``calico-ipam``: the CNI IPAM plugin executable, a thin client.

Imports only the standard library (and the stdlib-only ``agent_protocol``) before it knows where
the work happens: if the node agent listens on its CNI socket the call is forwarded there
(warm imports, a live etcd connection); otherwise ``pycalico.cni.ipam_handler`` is imported and
does the same work in this process.  Either way the process prints what the handler answered
(a result, or CNI error JSON) and exits with its status.  ``-v``/``--version`` prints the version.

Not here: any IPAM logic (``pycalico.ipam``) or CNI wire format (``pycalico.cni.spec``).
"""

import sys

from pycalico.cni import entry

PLUGIN = "calico-ipam"
VERSION = entry.VERSION


def main(argv: "list[str] | None" = None) -> int:
    return entry.run(PLUGIN, "pycalico.cni.ipam_handler", argv)


if __name__ == "__main__":
    sys.exit(main())
