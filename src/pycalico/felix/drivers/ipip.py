"""Does this kernel support IPIP?  A side-effect-free probe, asked once per process.

What it is: the check behind Calico's ``ipipMode`` refusal.  pycalico programs no IPIP tunnel
(no ``tunl0``, no tunnel routes); where the kernel lacks the ``ipip`` module (this project's
kernel does) the reason names the missing kernel support, so the error Felix and calico-node
report says what an operator would have to change.  What it is not: an IPIP implementation,
nor a ``modprobe`` (nothing is created or loaded to find out).

Invariant: reads only ``/sys/module`` (loaded or built-in modules) and the kernel's module
index under ``/lib/modules/<release>``; the result is cached by ``ipip_unsupported_reason``.
"""

from __future__ import annotations

import functools
import os
import re

_MODULE = re.compile(r"(^|/)ipip\.ko(\.[a-z]+)?(:|$)", re.MULTILINE)


def probe_ipip(
    sys_module: str = "/sys/module", lib_modules: str = "/lib/modules", release: str = ""
) -> str | None:
    """None when the kernel has IPIP (module loaded, built in or installed); else why not."""
    release = release or os.uname().release
    if os.path.isdir(os.path.join(sys_module, "ipip")):
        return None
    for index in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(lib_modules, release, index), encoding="utf-8") as handle:
                if _MODULE.search(handle.read()):
                    return None
        except OSError:
            continue
    return (
        f"this kernel ({release}) has no IPIP support: the ipip module (CONFIG_NET_IPIP) is "
        "neither loaded, built in nor installed"
    )


@functools.cache
def ipip_unsupported_reason() -> str | None:
    return probe_ipip()
