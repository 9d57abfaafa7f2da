"""``calicoctl ipam``: show, check, release and configure Calico IPAM (reference §8.1).

A click group registered by ``pycalico.ctl.main``.  The datastore comes from the command's own
``-c/--config``, else the one given to ``calicoctl`` itself (``ctx.obj['config_file']``), else
``/etc/calico/calicoctl.cfg``, else ``DATASTORE_TYPE``/``ETCD_*`` from the environment.  Each
command runs one ``asyncio.run`` over one etcd connection.  Not here: IPAM logic
(``pycalico.ipam``).

Output follows calicoctl's (go-pretty tables): the usage table ``GROUPING | CIDR | IPS TOTAL |
IPS IN USE | IPS RESERVED | IPS FREE`` (reference §8.1; the newest calicoctl adds an ``IPS
COOLING`` column, not shown here), a row per pool and, with ``--show-blocks``, per block.
Counts are libcalico-go's accounting: IN USE includes cooling-down addresses; RESERVED is every address an IPReservation covers, allocated or not (over the
pool's whole CIDR, or the block); an address both in use and reserved shows in both, so the
percentages need not add up to 100, and FREE = TOTAL - RESERVED - (IN USE - both) counts it once.
``--ip`` prints ``IP x is in use`` with the handle and owner attributes, or ``x is not assigned``;
``--show-borrowed`` and ``--show-configuration`` print their tables.
``check`` prints calicoctl's scan lines (every address with ``--show-all-ips``, the problem ones
with ``--show-problem-ips``) and exits 1 when it finds an inconsistency; ``-o FILE`` writes
calicoctl's JSON report.  ``release`` takes ``--ip`` (repeatable) or ``--from-report`` (repeatable:
only what every report calls leaked), never both; a report is read and vetted before anything is
written (``pycalico.ctl.ipam_check``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from pycalico import __version__
from pycalico.ctl.ipam_check import release_from_reports, summary_lines
from pycalico.datastore.api import DatastoreError, KVStore
from pycalico.ipam.allocator import IPAM, IPAMError
from pycalico.ipam.blocks import AllocationBlock, ReleaseOption
from pycalico.ipam.check import Report, check
from pycalico.ipam.check_report import CheckReport, ReportError, parse_report
from pycalico.ipam.pools import Pool
from pycalico.ipam.records import IPAMConfig, IPNetwork
from pycalico.ipam.reservations import Reservations
from pycalico.lib.addresses import address_order

T = TypeVar("T")


class IpamFailure(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.message, file=file or sys.stderr)


def _config_file(ctx: click.Context, own: str | None) -> str | None:
    if own is not None:
        return own
    root = ctx.find_root().obj
    value = root.get("config_file") if isinstance(root, dict) else None
    return value if isinstance(value, str) else None


def _run(ctx: click.Context, own_config: str | None, work: Callable[[KVStore], Awaitable[T]]) -> T:
    from pycalico.datastore.config import DatastoreConfig, DatastoreConfigError
    from pycalico.datastore.etcd import EtcdKVStore

    try:
        config = DatastoreConfig.load(_config_file(ctx, own_config))
    except DatastoreConfigError as exc:
        raise IpamFailure(f"Failed to create Calico API client: {exc}") from exc

    async def main() -> T:
        kv = EtcdKVStore.from_config(config, timeout=10.0, retry_timeout=5.0)
        try:
            return await work(kv)
        finally:
            await kv.close()

    try:
        return asyncio.run(main())
    except (IPAMError, DatastoreError) as exc:
        raise IpamFailure(str(exc)) from exc


def _config_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c", "--config", "config_file", default=None, help="Path to a CalicoAPIConfig file."
    )(function)


@click.group()
def ipam() -> None:
    """IP address management: show usage, check consistency, release, configure."""


# --- show ---------------------------------------------------------------------------------------


# Calico's counts are Go ints: an IPv6 pool's size saturates here rather than wrapping.
_MAX_INT = 2**63 - 1

# calicoctl's usage table; the count columns are right-aligned, the rest left.
USAGE_HEADER = (
    "GROUPING",
    "CIDR",
    "IPS TOTAL",
    "IPS IN USE",
    "IPS RESERVED",
    "IPS FREE",
)


@dataclass(frozen=True, slots=True)
class Usage:
    """One row's counts, in libcalico-go's accounting terms.

    ``in_use`` includes the cooling addresses (``cooling`` is the part of it released and not yet
    reusable); ``reserved`` is every address an IPReservation covers, allocated or not;
    ``in_use_reserved`` is their overlap, so ``free`` counts nothing twice.
    """

    total: int
    in_use: int = 0
    reserved: int = 0
    in_use_reserved: int = 0
    cooling: int = 0

    @property
    def free(self) -> int:
        return max(self.total - self.reserved - (self.in_use - self.in_use_reserved), 0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.total + other.total,
            self.in_use + other.in_use,
            self.reserved + other.reserved,
            self.in_use_reserved + other.in_use_reserved,
            self.cooling + other.cooling,
        )


def block_usage(block: AllocationBlock, reservations: Reservations) -> Usage:
    held = {o for o, index in enumerate(block.allocations) if index is not None}
    reserved = reservations.reserved_in(block.cidr)
    return Usage(
        total=block.size,
        in_use=len(held),
        reserved=len(reserved),
        in_use_reserved=sum(1 for a in reserved if block.ordinal(a) in held),
        cooling=len(block.cooling_ordinals()),
    )


def reserved_in_cidr(cidr: IPNetwork, reservations: Reservations) -> int:
    """How many addresses of ``cidr`` the reservations cover, overlaps once (no enumeration:
    an IPv6 pool is far too big).  CIDRs either nest or are disjoint, so after dropping the
    nested ones the rest add up."""
    overlapping = [
        n for n in reservations.networks if n.version == cidr.version and n.overlaps(cidr)
    ]
    if any(cidr.subnet_of(n) for n in overlapping):  # type: ignore[arg-type]
        return cidr.num_addresses
    kept: list[IPNetwork] = []
    for network in sorted(overlapping, key=lambda n: n.prefixlen):
        if not any(network.subnet_of(k) for k in kept):  # type: ignore[arg-type]
            kept.append(network)
    return sum(n.num_addresses for n in kept)


def owning_pool(block: IPNetwork, pools: Sequence[Pool]) -> Pool | None:
    """The pool a block is counted under, as libcalico-go's accounting picks it: of the pools
    containing the whole block, those of the block's size if any, then the narrowest, then by
    name."""
    candidates = [
        p
        for p in pools
        if p.version == block.version and block.subnet_of(p.cidr)  # type: ignore[arg-type]
    ]
    sized = [p for p in candidates if p.block_size == block.prefixlen] or candidates
    return min(sized, key=lambda p: (-p.cidr.prefixlen, p.name), default=None)


def _count(n: int) -> str:
    # Go's %.5g of a float64: five significant digits, exponent form from 100000 on.
    return f"{float(min(n, _MAX_INT)):.5g}"


def _with_percent(n: int, total: int) -> str:
    n, total = min(n, _MAX_INT), min(total, _MAX_INT)
    # Go's %.f rounds a float64 the way Python's format does (ties to even: 12.5 -> 12).
    return f"{_count(n)} ({100 * float(n) / float(total):.0f}%)"


def usage_row(grouping: str, cidr: IPNetwork, usage: Usage) -> list[str]:
    total = min(usage.total, _MAX_INT)
    return [
        grouping,
        str(cidr),
        _count(total),
        _with_percent(usage.in_use, total),
        _with_percent(usage.reserved, total),
        _with_percent(usage.free, total),
    ]


def usage_rows(
    pools: Sequence[Pool],
    blocks: Sequence[AllocationBlock],
    reservations: Reservations,
    show_blocks: bool,
) -> list[list[str]]:
    """A row per pool (in the order given), each followed by its blocks' rows with
    ``show_blocks``; then, with ``show_blocks``, the blocks no pool contains (no pool row, as
    calicoctl prints nothing for its "orphaned allocation blocks" group)."""
    by_pool: dict[str, list[AllocationBlock]] = {p.name: [] for p in pools}
    orphans: list[AllocationBlock] = []
    for block in sorted(blocks, key=lambda b: (b.version, int(b.cidr.network_address))):
        pool = owning_pool(block.cidr, pools)
        (by_pool[pool.name] if pool is not None else orphans).append(block)
    rows: list[list[str]] = []
    for pool in pools:
        counted = [(b, block_usage(b, reservations)) for b in by_pool[pool.name]]
        in_blocks = sum((u for _, u in counted), Usage(0))
        # Total and reserved cover the whole CIDR, space no block has been carved from too.
        pool_usage = Usage(
            total=pool.cidr.num_addresses,
            in_use=in_blocks.in_use,
            reserved=reserved_in_cidr(pool.cidr, reservations),
            in_use_reserved=in_blocks.in_use_reserved,
            cooling=in_blocks.cooling,
        )
        rows.append(usage_row("IP Pool", pool.cidr, pool_usage))
        if show_blocks:
            rows.extend(usage_row("Block", b.cidr, u) for b, u in counted)
    if show_blocks:
        rows.extend(usage_row("Block", b.cidr, block_usage(b, reservations)) for b in orphans)
    return rows


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[str] = ()
) -> str:
    """calicoctl's bordered table (go-pretty's default style): headings and cells left-aligned,
    except the cells of the columns named in ``right``."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    align = [name in right for name in header]

    def line(cells: Sequence[str], head: bool = False) -> str:
        parts = [
            str(c).rjust(w) if a and not head else str(c).ljust(w)
            for c, w, a in zip(cells, widths, align, strict=False)
        ]
        return "| " + " | ".join(parts) + " |"

    body = [rule, *(line(r) for r in rows)] if rows else []
    return "\n".join([rule, line(header, head=True), *body, rule])


async def _usage_table(kv: KVStore, show_blocks: bool) -> str:
    allocator = IPAM(kv)
    pools, listed, reservations = await asyncio.gather(
        allocator.list_pools(), allocator.list_blocks(), allocator.list_reservations()
    )
    rows = usage_rows(pools, [b for _, b in listed], reservations, show_blocks)
    return render_table(USAGE_HEADER, rows, right=USAGE_HEADER[2:])


def _owner_attributes(title: str, attrs: Mapping[str, str] | None) -> list[str]:
    if not attrs:
        return []
    return [f"{title}:", *(f"  {k}: {v}" for k, v in sorted(attrs.items()))]


async def _show_ip(kv: KVStore, text: str) -> str:
    """calicoctl's answer for one address.  It says nothing about IPReservations: a reserved
    address is "in use" or "not assigned" like any other."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise IPAMError(f"--ip: invalid IP address {text!r}") from exc
    info = await IPAM(kv).allocation_info(address)
    if info is None:
        return f"{address} is not assigned"
    lines = [f"IP {address} is in use", f"Handle ID: {info.handle_id or '<none>'}"]
    lines.extend(
        _owner_attributes("Active Owner Attributes", info.attributes)
        or ["No Active Owner attributes defined"]
    )
    return "\n".join(lines)


async def _show_borrowed(kv: KVStore) -> str:
    """Addresses allocated to a node other than the block's owner (calicoctl's columns)."""
    rows = []
    for _, block in await IPAM(kv).list_blocks():
        owner = block.host or ""
        for address in block.in_use_addresses():
            attribute = block.attribute_for(address)
            attrs = dict(attribute.secondary or {}) if attribute else {}
            node = attrs.get("node", "")
            if not node or node == owner:
                continue
            kind = attrs.get("type") or "pod"
            if "pod" in attrs:
                allocated_to = f"{attrs.get('namespace', '')}/{attrs['pod']}"
            else:
                allocated_to = (attribute.handle_id or "") if attribute else ""
            rows.append([str(address), node, str(block.cidr), owner, kind, allocated_to])
    header = ["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"]
    return render_table(
        header, sorted(rows, key=lambda r: address_order(ipaddress.ip_address(r[0])))
    )


async def _show_configuration(kv: KVStore) -> str:
    config = await IPAM(kv).get_config()
    rows = [
        ["StrictAffinity", str(config.strict_affinity).lower()],
        ["AutoAllocateBlocks", str(config.auto_allocate_blocks).lower()],
        ["MaxBlocksPerHost", str(config.max_blocks_per_host)],
        ["IPCooldownSeconds", str(config.ip_cooldown_seconds)],
    ]
    return render_table(["PROPERTY", "VALUE"], rows)


@ipam.command("show")
@click.option("--ip", "ip_text", default=None, help="Report whether this address is in use.")
@click.option("--show-blocks", is_flag=True, help="Also show a row per allocation block.")
@click.option("--show-borrowed", is_flag=True, help="Show addresses borrowed from other nodes.")
@click.option("--show-configuration", is_flag=True, help="Show the IPAM configuration.")
@_config_option
@click.pass_context
def show(
    ctx: click.Context,
    ip_text: str | None,
    show_blocks: bool,
    show_borrowed: bool,
    show_configuration: bool,
    config_file: str | None,
) -> None:
    """Show IP pool and block usage, or who holds one address."""
    if ip_text is not None:
        click.echo(_run(ctx, config_file, lambda kv: _show_ip(kv, ip_text)))
        return
    if show_borrowed:
        click.echo(_run(ctx, config_file, _show_borrowed))
        return
    if show_configuration:
        click.echo(_run(ctx, config_file, _show_configuration))
        return
    click.echo(_run(ctx, config_file, lambda kv: _usage_table(kv, show_blocks)))


# --- check --------------------------------------------------------------------------------------


@ipam.command("check")
@click.option("-o", "--output", "output_file", default=None, help="Write a JSON report here.")
@click.option("--show-all-ips", is_flag=True, help="Print every address that is checked.")
@click.option(
    "--show-problem-ips",
    is_flag=True,
    help="Print every address that is leaked or not allocated properly.",
)
@_config_option
@click.pass_context
def check_command(
    ctx: click.Context,
    output_file: str | None,
    show_all_ips: bool,
    show_problem_ips: bool,
    config_file: str | None,
) -> None:
    """Check IPAM consistency; exit status 1 when anything is inconsistent."""
    report: Report = _run(ctx, config_file, check)
    click.echo("Checking IPAM for inconsistencies...")
    for line in summary_lines(report, show_all_ips, show_problem_ips):
        click.echo(line)
    if output_file:
        try:
            with open(output_file, "w") as handle:
                handle.write(report.to_json() + "\n")
        except OSError as exc:
            raise IpamFailure(f"--output: cannot write {output_file}: {exc.strerror}") from exc
        click.echo(f"Report written to {output_file}")
    if not report.clean:
        ctx.exit(1)


# --- release ------------------------------------------------------------------------------------


async def _release(kv: KVStore, texts: Sequence[str]) -> list[str]:
    addresses = []
    for text in texts:
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError as exc:
            raise IPAMError(f"--ip: invalid IP address {text!r}") from exc
    allocator = IPAM(kv)
    not_allocated = set(await allocator.release_ips([ReleaseOption(a) for a in addresses]))
    lines = []
    for address in addresses:
        if address in not_allocated:
            raise IPAMError(f"IP address {address} is not assigned")
        lines.append(f"Successfully released IP address {address}")
    return lines


def _read_reports(files: Sequence[str]) -> list[tuple[str, CheckReport]]:
    reports = []
    for name in files:
        try:
            with open(name, "rb") as handle:
                text = handle.read()
        except OSError as exc:
            raise IpamFailure(f"--from-report: cannot read {name}: {exc.strerror}") from exc
        try:
            reports.append((name, parse_report(text, name)))
        except ReportError as exc:
            raise IpamFailure(f"--from-report: {exc}") from exc
    return reports


@ipam.command("release")
@click.option("--ip", "ip_texts", multiple=True, help="Address to release (repeatable).")
@click.option(
    "--from-report",
    "report_files",
    multiple=True,
    metavar="FILE",
    help="Release every address and handle an 'ipam check -o FILE' report calls leaked. "
    "Given several times (reports made at different times), only what all of them call "
    "leaked is released; at least one must be current.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --from-report: release although the data store is not locked or the report "
    "came from another calicoctl version.",
)
@_config_option
@click.pass_context
def release(
    ctx: click.Context,
    ip_texts: tuple[str, ...],
    report_files: tuple[str, ...],
    force: bool,
    config_file: str | None,
) -> None:
    """Release addresses that are allocated but no longer used (e.g. leaked)."""
    if ip_texts and report_files:
        raise IpamFailure(
            "--ip and --from-report cannot be used together: release given addresses or a "
            "report's leaks, one at a time"
        )
    if not report_files:
        if force:
            raise IpamFailure("--force applies only to --from-report")
        if not ip_texts:
            raise IpamFailure("nothing to release: give --ip=<IP> or --from-report=<FILE>")
        for line in _run(ctx, config_file, lambda kv: _release(kv, ip_texts)):
            click.echo(line)
        return
    reports = _read_reports(report_files)

    async def work(kv: KVStore) -> list[str]:
        try:
            return await release_from_reports(kv, reports, force, __version__)
        except ReportError as exc:
            raise IpamFailure(f"--from-report: {exc}") from exc

    for line in _run(ctx, config_file, work):
        click.echo(line)


# --- configure ----------------------------------------------------------------------------------


def _parse_bool(value: str | None, flag: str) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise IpamFailure(f"{flag}: invalid value {value!r}, expected true or false")
    return lowered == "true"


async def _configure(
    kv: KVStore, strict: bool | None, max_blocks: int | None, cooldown: int | None
) -> IPAMConfig:
    allocator = IPAM(kv)
    current = await allocator.get_config()
    updated = IPAMConfig(
        strict_affinity=current.strict_affinity if strict is None else strict,
        auto_allocate_blocks=current.auto_allocate_blocks,
        max_blocks_per_host=current.max_blocks_per_host if max_blocks is None else max_blocks,
        ip_cooldown_seconds=current.ip_cooldown_seconds if cooldown is None else cooldown,
        kube_virt_vm_address_persistence=current.kube_virt_vm_address_persistence,
    )
    await allocator.set_config(updated)
    return updated


@ipam.command("configure")
@click.option("--strictaffinity", "strict_text", default=None, help="true or false.")
@click.option("--max-blocks-per-host", type=int, default=None, help="0 means no limit.")
@click.option("--ip-cooldown-seconds", type=int, default=None, help="0 to 1200.")
@_config_option
@click.pass_context
def configure(
    ctx: click.Context,
    strict_text: str | None,
    max_blocks_per_host: int | None,
    ip_cooldown_seconds: int | None,
    config_file: str | None,
) -> None:
    """Change IPAM configuration (strict affinity, block limit, cooldown)."""
    strict = _parse_bool(strict_text, "--strictaffinity")
    if strict is None and max_blocks_per_host is None and ip_cooldown_seconds is None:
        raise IpamFailure(
            "nothing to configure: give --strictaffinity, --max-blocks-per-host or "
            "--ip-cooldown-seconds"
        )
    updated = _run(
        ctx,
        config_file,
        lambda kv: _configure(kv, strict, max_blocks_per_host, ip_cooldown_seconds),
    )
    if strict is not None:
        click.echo(f"Successfully set StrictAffinity to: {str(updated.strict_affinity).lower()}")
    if max_blocks_per_host is not None:
        click.echo(f"Successfully set MaxBlocksPerHost to: {updated.max_blocks_per_host}")
    if ip_cooldown_seconds is not None:
        click.echo(f"Successfully set IPCooldownSeconds to: {updated.ip_cooldown_seconds}")
