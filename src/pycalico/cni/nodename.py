"""The node a CNI call runs for: Calico's one rule, for both plugins.

``nodename`` in the network configuration, else the text of the nodename file (``nodename_file``,
default ``/var/lib/calico/nodename``, which calico-node writes), else ``hostname`` in the
configuration, else the Kubernetes node name from the environment (``KUBERNETES_NODE_NAME``),
else the OS host name in lower case.  The ``calico`` plugin also insists that the file exists
unless ``nodename_file_optional`` (Calico's check that calico-node runs); ``calico-ipam`` does
not.  The order itself is ``spec.determine_nodename`` (pure); this module reads the file and the
host name, and only when they are needed.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from pycalico.cni.spec import DEFAULT_NODENAME_FILE, CniError, determine_nodename


def node_name(config: Mapping[str, Any], env: Mapping[str, str], *, file_required: bool) -> str:
    """The node's name for this call (CniError naming the file when it is required and
    missing)."""
    if config.get("nodename"):
        return determine_nodename(config, None, "")  # the usual case: no file, no system call
    path = str(config.get("nodename_file") or DEFAULT_NODENAME_FILE)
    try:
        with open(path) as handle:
            text: str | None = handle.read()
    except OSError:
        if file_required:
            raise CniError(
                f"nodename_file: {path} is missing: check that the calico/node container is "
                "running and has mounted /var/lib/calico/ (or set nodename, or "
                "nodename_file_optional)"
            ) from None
        text = None
    if (text and text.strip()) or config.get("hostname"):
        return determine_nodename(config, text, "")
    return determine_nodename(config, None, env.get("KUBERNETES_NODE_NAME") or socket.gethostname())
