"""IPAM kinds: IPPool, IPAMConfiguration and IPReservation, plus the pure cross-resource checks the client layer
needs for pools (overlap with existing pools, immutable fields).

What it is: their wire shape, the defaults Calico's client fills in on write, and the checks of
Calico's validator.  What it is not: address assignment or blocks (``pycalico.ipam``).

Invariants:

* IPPool defaults on write: ``blockSize`` 26 (IPv4) / 122 (IPv6), ``ipipMode``/``vxlanMode``
  ``Never``, ``nodeSelector`` ``all()``, ``allowedUses`` [Workload, Tunnel], ``assignmentMode``
  ``Automatic``; a valid CIDR is rewritten in canonical form ("fd00:0::/48" -> "fd00::/48").
* A pool CIDR is strictly masked; ``blockSize`` is 20-32 (IPv4) or 116-128 (IPv6) and no smaller
  than the pool unless the pool is disabled; IPIP is IPv4-only and never together with VXLAN.
* ``cidr`` and ``blockSize`` never change once a pool exists (``immutable_field_changes``).
* IPAMConfiguration is a singleton named ``default``; ``maxBlocksPerHost`` > 0 needs
  ``strictAffinity``; ``strictAffinity: false`` with ``autoAllocateBlocks: false`` is refused.
* IPReservation ``reservedCIDRs`` entries are each a CIDR of either family, not necessarily
  masked ("10.0.0.5/30" means 10.0.0.4/30), or a bare address (a /32 or /128), as Calico's
  ``cidrs`` validator (ParseCIDROrIP); they are stored as written, Calico's client does not
  rewrite them.  No defaults.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal, Self

from pydantic import Field

from pycalico.model.fields import cidr_problem, network_of, network_problem, selector_problem
from pycalico.model.meta import Resource
from pycalico.model.validation import Checked, CheckedResource, Issue

EncapsulationMode = Literal["Never", "Always", "CrossSubnet"]
AllowedUse = Literal["Workload", "Tunnel", "LoadBalancer"]

BLOCK_SIZE_RANGES = {4: (20, 32), 6: (116, 128)}
DEFAULT_BLOCK_SIZES = {4: 26, 6: 122}
_LINK_LOCAL = {
    4: ipaddress.ip_network("169.254.0.0/16"),
    6: ipaddress.ip_network("fe80::/10"),
}


class IPPoolSpec(Checked):
    """Go field order: cidr, vxlanMode, ipipMode, natOutgoing, disabled, disableBGPExport, ..."""

    cidr: str
    vxlan_mode: EncapsulationMode | None = None
    ipip_mode: EncapsulationMode | None = None
    nat_outgoing: bool = False
    disabled: bool = False
    disable_bgp_export: bool = Field(default=False, alias="disableBGPExport")
    block_size: int | None = None
    node_selector: str | None = None
    namespace_selector: str | None = None
    allowed_uses: list[AllowedUse] | None = None
    assignment_mode: Literal["Automatic", "Manual"] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        problem = network_problem(self.cidr)
        if problem is None and "/" not in self.cidr:
            problem = f"{self.cidr} is an address, not a CIDR: give a prefix length (like /16)"
        network = None if problem else network_of(self.cidr)
        if problem:
            yield f"{path}.cidr", problem
        for field, wire in (
            ("node_selector", "nodeSelector"),
            ("namespace_selector", "namespaceSelector"),
        ):
            value = getattr(self, field)
            if value:
                selector_issue = selector_problem(value)
                if selector_issue:
                    yield f"{path}.{wire}", selector_issue
                elif "global(" in value:
                    yield f"{path}.{wire}", "global() is not valid in an IPPool selector"
        ipip_on = self.ipip_mode not in (None, "Never")
        vxlan_on = self.vxlan_mode not in (None, "Never")
        if ipip_on and vxlan_on:
            yield f"{path}.ipipMode", "ipipMode and vxlanMode cannot both be enabled on one pool"
        uses = self.allowed_uses or []
        if "Tunnel" in uses and self.namespace_selector:
            yield f"{path}.namespaceSelector", "a pool with allowedUse Tunnel cannot have one"
        if "LoadBalancer" in uses:
            others = [use for use in uses if use != "LoadBalancer"]
            if others:
                yield (
                    f"{path}.allowedUses",
                    f"LoadBalancer cannot be combined with {', '.join(others)}",
                )
            if ipip_on or vxlan_on:
                yield f"{path}.ipipMode", "a LoadBalancer pool cannot use IPIP or VXLAN"
            if self.disable_bgp_export:
                yield f"{path}.disableBGPExport", "must not be set on a LoadBalancer pool"
            if self.node_selector not in (None, "", "all()"):
                yield f"{path}.nodeSelector", "a LoadBalancer pool's nodeSelector must be all()"
        if network is None:
            return
        version = network.version
        if version == 6 and ipip_on:
            yield f"{path}.ipipMode", "IPIP is not supported on an IPv6 pool: use Never"
        if network.overlaps(_LINK_LOCAL[version]):
            yield (
                f"{path}.cidr",
                f"{self.cidr} overlaps the link-local range {_LINK_LOCAL[version]}",
            )
        block_size = (
            self.block_size if self.block_size is not None else DEFAULT_BLOCK_SIZES[version]
        )
        low, high = BLOCK_SIZE_RANGES[version]
        if not low <= block_size <= high:
            family = "IPv4" if version == 4 else "IPv6"
            yield (
                f"{path}.blockSize",
                f"blockSize {block_size} is out of range for an {family} pool ({low}-{high})",
            )
        elif not self.disabled and network.prefixlen > block_size:
            yield (
                f"{path}.cidr",
                f"the pool /{network.prefixlen} is smaller than one block /{block_size}: "
                f"use a larger pool or a blockSize of at least {network.prefixlen}",
            )

    def defaults(self) -> dict[str, object]:
        update: dict[str, object] = {}
        if "/" in self.cidr and network_problem(self.cidr) is None:
            network = network_of(self.cidr)
            assert network is not None
            if str(network) != self.cidr:
                update["cidr"] = str(network)
            if self.block_size is None:
                update["block_size"] = DEFAULT_BLOCK_SIZES[network.version]
        if self.ipip_mode is None:
            update["ipip_mode"] = "Never"
        if self.vxlan_mode is None:
            update["vxlan_mode"] = "Never"
        if not self.node_selector:
            update["node_selector"] = "all()"
        if not self.allowed_uses:
            update["allowed_uses"] = ["Workload", "Tunnel"]
        if self.assignment_mode is None:
            update["assignment_mode"] = "Automatic"
        return update


class IPPool(CheckedResource):
    KIND: ClassVar[str] = "IPPool"
    PLURAL: ClassVar[str] = "ippools"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "IPPool"
    spec: IPPoolSpec
    status: dict[str, Any] | None = None

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

    def with_defaults(self, *, namespace: str = "default") -> Self:
        update = self.spec.defaults()
        if not update:
            return self
        return self.model_copy(update={"spec": self.spec.model_copy(update=update)})

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        network = network_of(self.spec.cidr)
        if network is None:
            raise ValueError(f"IPPool {self.name!r} has an invalid CIDR {self.spec.cidr!r}")
        return network


class IPAMConfigurationSpec(Checked):
    strict_affinity: bool | None = None
    auto_allocate_blocks: bool | None = None
    max_blocks_per_host: int | None = Field(default=None, ge=0, le=1_000_000)
    ip_cooldown_seconds: int | None = Field(default=None, alias="ipCooldownSeconds", ge=0, le=1200)
    kube_virt_vm_address_persistence: Literal["Enabled", "Disabled"] | None = Field(
        default=None, alias="kubeVirtVMAddressPersistence"
    )
    # No cross-field rules: Calico's resource validator (and the CRD's) accepts any combination.
    # ``calicoctl ipam configure`` refuses maxBlocksPerHost without strictAffinity, and both
    # flags false, as Calico's SetIPAMConfig does (``pycalico.ipam.records.IPAMConfig.validate``).


class IPAMConfiguration(CheckedResource):
    KIND: ClassVar[str] = "IPAMConfiguration"
    PLURAL: ClassVar[str] = "ipamconfigurations"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "IPAMConfiguration"
    spec: IPAMConfigurationSpec = Field(default_factory=IPAMConfigurationSpec)

    def name_issue(self) -> str | None:
        if self.metadata.name != "default":
            return "an IPAMConfiguration must be named 'default'"
        return None

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

    def with_defaults(self, *, namespace: str = "default") -> Self:
        # Both flags are always printed by Calico (no omitempty); fill the documented defaults.
        update: dict[str, object] = {}
        if self.spec.strict_affinity is None:
            update["strict_affinity"] = False
        if self.spec.auto_allocate_blocks is None:
            update["auto_allocate_blocks"] = True
        if not update:
            return self
        return self.model_copy(update={"spec": self.spec.model_copy(update=update)})


class IPReservationSpec(Checked):
    reserved_cidrs: list[str] | None = Field(default=None, alias="reservedCIDRs")

    def issues(self, path: str) -> Iterator[Issue]:
        for index, text in enumerate(self.reserved_cidrs or []):
            problem = cidr_problem(text)
            if problem is None and "%" in text:
                # Python accepts an IPv6 zone ("fe80::1%eth0"); Go's ParseCIDR does not.
                problem = f"{text!r} is not a valid CIDR: a zone (%...) is not allowed"
            if problem:
                yield f"{path}.reservedCIDRs[{index}]", problem


class IPReservation(CheckedResource):
    """Addresses Calico IPAM never auto-assigns (an explicit assign_ip may still take them)."""

    KIND: ClassVar[str] = "IPReservation"
    PLURAL: ClassVar[str] = "ipreservations"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "IPReservation"
    spec: IPReservationSpec = Field(default_factory=IPReservationSpec)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

    @property
    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The reserved networks, masked (an unparsable entry is skipped, as Calico's IPAM)."""
        out = []
        for text in self.spec.reserved_cidrs or []:
            network = None if "%" in text else network_of(text.strip())
            if network is not None:
                out.append(network)
        return out


# --- cross-resource checks for the client layer -----------------------------------------------


def pool_overlaps(new: IPPool, existing: Iterable[IPPool]) -> str | None:
    """A message if ``new``'s CIDR overlaps another pool's (same-named pools are skipped)."""
    network = network_of(new.spec.cidr)
    if network is None:
        return None
    for pool in existing:
        if pool.name == new.name:
            continue
        other = network_of(pool.spec.cidr)
        if other is not None and other.version == network.version and network.overlaps(other):
            return (
                f"IPPool {new.name!r} ({new.spec.cidr}) overlaps IPPool {pool.name!r} "
                f"({pool.spec.cidr})"
            )
    return None


_IMMUTABLE: dict[str, tuple[tuple[str, str], ...]] = {
    "IPPool": (("cidr", "spec.cidr"), ("block_size", "spec.blockSize")),
}


def immutable_field_changes(old: Resource, new: Resource) -> list[str]:
    """Field paths (wire names) that ``new`` changes but that may never change after create."""
    changed: list[str] = []
    old_spec = getattr(old, "spec", None)
    new_spec = getattr(new, "spec", None)
    for field, path in _IMMUTABLE.get(old.KIND, ()):
        before = getattr(old_spec, field, None)
        after = getattr(new_spec, field, None)
        if field == "cidr" and before is not None and after is not None:
            before, after = network_of(before) or before, network_of(after) or after
        if after is not None and before != after:
            changed.append(path)
    return changed
