"""Tests' check of ``calicoctl explain`` and ``--verify`` against what the packets did.

What it is: for one probe whose delivery a test observed, explain's answer (the same
computation as the command) and ``--verify``'s kernel reading (in process: one explain process
per probe would cost a Python start and a datastore listing each), reduced to "" when all agree
or to a description of what differs.  What it is not: the probe's delivery (the tests'
connectivity checkers observe it) or a mock: real Felix, real kernel.

Invariant: agreement means explain's verdict == delivery == the kernel's verdict, and every
side the kernel evaluated decided by the rule explain named (an ingress side that an egress
drop kept the probe from is not evaluated).
"""

from __future__ import annotations

from pycalico.ctl.explain_verify import verify
from pycalico.felix.calc.explain import Cluster
from pycalico.felix.calc.explain import explain as compute


def explained_and_verified(
    cluster: Cluster, source: str, destination: str, protocol: str, port: int | None,
    delivered: bool,
) -> str:  # fmt: skip
    """ "" when explain, the kernel and the delivery agree, else what differs."""
    answer = compute(cluster, source, destination, protocol, port)
    checked = verify(cluster, answer)
    kernel = all(side.kernel.verdict == "allow" for side in checked.sides)
    consistent = (answer.verdict == "allow") == delivered == kernel
    evaluated = all(s.agrees is not None or s.side == "ingress" for s in checked.sides)
    if consistent and evaluated and not checked.disagrees:
        return ""
    return (
        f"{source} -> {destination} {protocol} {port}: delivered={delivered} "
        f"explain={answer.verdict} ({', '.join(s.explained.text() for s in checked.sides)})"
        + checked.text()
    )
