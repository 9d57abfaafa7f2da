"""The lab's plan: what ``calico-lab up`` will build, checked before anything is started.

What it is: the refusals of impossible requests (``check_request``), the layout of names,
namespaces and addresses (``plan``), and the lab's error types.  What it is not: building
anything (``cluster``).  Invariant: ``check_request`` raises only ``LabRefused`` and names the
option at fault.
"""

from __future__ import annotations

import os

from pycalico.lab import state as lab_state
from pycalico.lab.state import EtcdMemberState, LabState, NodeState
from pycalico.netns.ports import free_port


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says what to do instead."""


class LabRefused(LabError):
    """``up`` refused before starting anything: there is nothing to clean up."""


class LabExists(LabRefused):
    """``up`` found a lab already there (state file or namespaces with the prefix)."""


ENCAPSULATIONS = {"": "Never", "vxlan": "Always", "vxlan-crosssubnet": "CrossSubnet"}


def check_request(
    *,
    nodes: int,
    route_reflectors: int,
    etcd_members: int,
    encapsulation: str = "",
    subnets: int = 1,
) -> None:
    """Refuse a lab that cannot be built, before anything is started or printed."""
    if not 1 <= nodes <= 200:
        raise LabRefused(f"--nodes: {nodes} is out of range (1 to 200)")
    if not 0 <= route_reflectors <= nodes:
        raise LabRefused(
            f"--route-reflectors: {route_reflectors} is more than the {nodes} nodes"
            if route_reflectors > nodes
            else f"--route-reflectors: {route_reflectors} is negative"
        )
    if etcd_members not in (1, 3):
        raise LabRefused(f"--etcd-members: {etcd_members} (use 1 or 3)")
    if encapsulation not in ENCAPSULATIONS:
        raise LabRefused(f"--encapsulation: {encapsulation!r} (use vxlan or vxlan-crosssubnet)")
    if subnets not in (1, 2):
        raise LabRefused(f"--subnets: {subnets} (use 1 or 2)")
    if subnets == 2 and not encapsulation:
        raise LabRefused(
            "--subnets 2 needs --encapsulation: the router between the subnets knows no pod "
            "routes, so only an overlay carries pod traffic between them"
        )
    if subnets > nodes:
        raise LabRefused(f"--subnets: {subnets} subnets need at least as many nodes")
    if encapsulation and route_reflectors:
        raise LabRefused("--route-reflectors: the vxlan backend runs no BGP")


def plan(
    *,
    state_dir: str,
    prefix: str,
    nodes: int,
    route_reflectors: int,
    etcd_members: int,
    ipv6: bool,
    encapsulation: str = "",
    subnets: int = 1,
) -> LabState:
    """The lab's layout: names, namespaces, addresses, directories (nothing is created).
    With ``subnets`` 2 the first half of the nodes is in ``10.99.0.0/24``, the rest in
    ``10.99.1.0/24`` (IPv6: ``fd00:99::/64`` and ``fd00:99:0:1::/64``)."""
    members = tuple(
        EtcdMemberState(
            name=f"etcd{i}",
            namespace=lab_state.etcd_namespace(prefix, i),
            address=f"{lab_state.FABRIC_SUBNET}.{lab_state.ETCD_HOST_BASE - i}",
            host_port=free_port(),
        )
        for i in range(etcd_members)
    )
    node_states = tuple(
        NodeState(
            name=lab_state.node_name(i),
            namespace=lab_state.node_namespace(prefix, lab_state.node_name(i)),
            address=f"{lab_state.subnet_prefix(lab_state.subnet_of(i, nodes, subnets))}.{i}",
            address6=(
                f"{lab_state.subnet_prefix6(lab_state.subnet_of(i, nodes, subnets))}{i:x}"
                if ipv6
                else ""
            ),
            directory=os.path.join(state_dir, "nodes", lab_state.node_name(i)),
            route_reflector=i <= route_reflectors,
        )
        for i in range(1, nodes + 1)
    )
    return LabState(prefix, state_dir, ipv6, members, node_states, (), encapsulation, subnets)
