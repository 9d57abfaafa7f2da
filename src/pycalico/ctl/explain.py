"""``calicoctl explain --from X --to Y [--port N] [--protocol P] [-o json|yaml]``.

What it is: the command: it lists, from the datastore, what Felix's syncer would deliver for
the question (WorkloadEndpoints, HostEndpoints, Nodes, NetworkPolicies, GlobalNetworkPolicies,
Tiers, Profiles, NetworkSets, GlobalNetworkSets) and each node's Felix settings from
FelixConfiguration (``node.<name>`` over ``default``, merged and parsed by Felix's own
``calc.config`` and ``felix.config``; a node's environment and config file are not visible
from here), hands them to ``pycalico.felix.calc.explain`` (the computation, over Felix's own
calculation graph) and prints ``explain_format``'s text or ``-o json|yaml``; ``--verify`` also
sends the probe and compares with the kernel (``explain_verify``).  Registered lazily by
``pycalico.ctl.main``.

Invariant: exit status 0 when the answer was computed, whatever the verdict; 1 (message on
stderr) when an end names nothing, the datastore cannot be read or ``--verify`` cannot run;
3 when ``--verify`` found the kernel deciding otherwise than explain.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import yaml

from pycalico.ctl import client
from pycalico.ctl.explain_format import as_dict, as_text
from pycalico.ctl.explain_verify import VerifyError
from pycalico.ctl.explain_verify import verify as verify_in_kernel
from pycalico.ctl.results import CommandError
from pycalico.datastore.api import DatastoreError
from pycalico.datastore.resources import ResourceStore
from pycalico.felix.calc.config import GLOBAL_CONFIG_NAME, effective_config, node_config_name
from pycalico.felix.calc.explain import Cluster, ExplainError
from pycalico.felix.calc.explain import explain as compute
from pycalico.felix.config import ConfigError, load
from pycalico.felix.rules.model import RenderConfig
from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    Profile,
    WorkloadEndpoint,
)
from pycalico.model.node import FelixConfiguration, Node
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier


class ExplainFailure(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.message, file=file or sys.stderr)


async def load_cluster(store: ResourceStore) -> Cluster:
    """Everything explain reads, as Felix's syncer would deliver it."""

    async def items(kind: str) -> list[Any]:
        return list((await store.list(kind)).items)

    policies = [*await items("GlobalNetworkPolicy"), *await items("NetworkPolicy")]
    sets = [*await items("GlobalNetworkSet"), *await items("NetworkSet")]
    configs = [c for c in await items("FelixConfiguration") if isinstance(c, FelixConfiguration)]
    default_config, render_configs = node_render_configs(configs)
    return Cluster(
        workload_endpoints=[w for w in await items("WorkloadEndpoint") if isinstance(w, WorkloadEndpoint)],
        policies=[p for p in policies if isinstance(p, NetworkPolicy | GlobalNetworkPolicy)],
        profiles=[p for p in await items("Profile") if isinstance(p, Profile)],
        tiers=[t for t in await items("Tier") if isinstance(t, Tier)],
        network_sets=[s for s in sets if isinstance(s, NetworkSet | GlobalNetworkSet)],
        host_endpoints=[h for h in await items("HostEndpoint") if isinstance(h, HostEndpoint)],
        nodes=[n for n in await items("Node") if isinstance(n, Node)],
        render_configs=render_configs,
        default_config=default_config,
    )  # fmt: skip


def node_render_configs(
    configs: list[FelixConfiguration],
) -> tuple[RenderConfig, dict[str, RenderConfig]]:
    """The rendering settings of a node without its own FelixConfiguration, and of each node
    with one: what its Felix would take from the datastore (``effective_config``: node over
    global) above the built-in defaults (``felix.config.load``), nothing else."""
    by_name = {c.metadata.name: c for c in configs}
    global_config = by_name.get(GLOBAL_CONFIG_NAME)

    def render(node: str, node_config: FelixConfiguration | None) -> RenderConfig:
        values = dict(effective_config(global_config, node_config).values)
        try:
            return load(datastore=values, default_hostname=node or "-").render()
        except ConfigError as error:
            raise ExplainFailure(f"FelixConfiguration: {error}") from error

    prefix = node_config_name("")
    nodes = {
        name[len(prefix) :]: config
        for name, config in by_name.items()
        if name.startswith(prefix) and len(name) > len(prefix)
    }
    return render("", None), {node: render(node, config) for node, config in nodes.items()}


def _config(ctx: click.Context, config_file: str | None) -> str | None:
    if config_file is not None:
        return config_file
    root = ctx.find_root().obj or {}
    value = root.get("config_file") if isinstance(root, dict) else None
    return value if isinstance(value, str) else None


@click.command("explain")
@click.option(
    "--from",
    "source",
    required=True,
    help="<namespace>/<pod>, a WorkloadEndpoint, hostendpoint/<name>, node/<name> or an IP.",
)
@click.option(
    "--to",
    "destination",
    required=True,
    help="<namespace>/<pod>, a WorkloadEndpoint, hostendpoint/<name>, node/<name> or an IP.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Destination port (default 80)."
)
@click.option(
    "--protocol",
    type=click.Choice(["TCP", "UDP", "ICMP", "SCTP"], case_sensitive=False),
    default="TCP",
    show_default=True,
)
@click.option(
    "-o", "--output", "output", type=click.Choice(["text", "json", "yaml"]), default="text"
)
@click.option("-c", "--config", "config_file", default=None, help="Path to a CalicoAPIConfig file.")
@click.option(
    "--verify", is_flag=True, help="Send the probe and check the kernel's deciding rules (root)."
)
@click.pass_context
def explain(
    ctx: click.Context,
    source: str,
    destination: str,
    port: int | None,
    protocol: str,
    output: str,
    config_file: str | None,
    verify: bool,
) -> None:
    """Why a flow is allowed or dropped: tiers, policies, rules and profiles, as Felix computes them."""
    try:
        cluster = client.run(_config(ctx, config_file), load_cluster)
        answer = compute(cluster, source, destination, protocol, port)
        checked = verify_in_kernel(cluster, answer) if verify else None
    except (CommandError, DatastoreError, ExplainError, VerifyError) as error:
        raise ExplainFailure(str(error)) from error
    document = as_dict(answer)
    if checked is not None:
        document["verify"] = checked.as_dict()
    if output == "json":
        click.echo(json.dumps(document, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(document, sort_keys=False), nl=False)
    else:
        click.echo(as_text(answer) + (checked.text() if checked else ""), nl=False)
    if checked is not None and checked.disagrees:
        ctx.exit(3)
