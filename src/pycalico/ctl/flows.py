"""``calicoctl flows``: the denied-flow records Felix wrote on a node (docs/flows.md).

What it is: a reader of ``<directory>/denied.jsonl`` (Felix's ``flowLogsFileDirectory``), one
line per record, printed as a table or as the JSON lines; ``--follow`` keeps reading as Felix
appends (polling the file's size every 0.2 s, as ``tail -f``).  ``--node N`` reads
``<directory>/N/denied.jsonl`` when that exists (a lab keeps one directory per node under one
root), else keeps only node N's records.
What it is not: a datastore client; flows never leave the node that logged them.

Invariants: a partial last line (Felix mid-write) is held back until it is complete.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

DENIED_FILE = "denied.jsonl"
DEFAULT_DIRECTORY = "/var/log/calico/flows"
COLUMNS = ("TIME", "NODE", "SOURCE", "DESTINATION", "PROTO", "PORT", "POLICY", "RULE")


def records_path(directory: str, node: str | None) -> tuple[str, bool]:
    """(file to read, whether records must still be filtered by node)."""
    if node:
        per_node = os.path.join(directory, node, DENIED_FILE)
        if os.path.exists(per_node):
            return per_node, False
        return os.path.join(directory, DENIED_FILE), True
    return os.path.join(directory, DENIED_FILE), False


def _endpoint(record: dict[str, Any], side: str) -> str:
    name = record.get(f"{side}_endpoint") or ""
    address = record.get(f"{side}_ip", "")
    return f"{name}({address})" if name else str(address)


def policy_of(record: dict[str, Any]) -> tuple[str, str]:
    """(policy, rule) columns: ``tier/name`` and ``ingress[2]`` / ``end-of-tier``."""
    kind = record.get("kind", "")
    direction = record.get("direction", "")
    if kind == "EndOfTier":
        return f"tier {record.get('tier', '')}", f"{direction} end-of-tier"
    if kind == "NoProfile":
        return "(profiles)", f"{direction} no-profile-matched"
    if kind == "Unknown":
        return record.get("prefix", "?"), "?"
    tier = record.get("tier", "")
    name = f"{tier}/{record.get('policy', '')}" if tier else f"profile {record.get('policy')}"
    return name, f"{direction}[{record.get('rule_index', '')}]"


def format_row(record: dict[str, Any]) -> tuple[str, ...]:
    moment = time.strftime("%H:%M:%S", time.gmtime(float(record.get("time", 0))))
    policy, rule = policy_of(record)
    port = record.get("destination_port") or ""
    return (
        moment, str(record.get("node", "")), _endpoint(record, "source"),
        _endpoint(record, "destination"), str(record.get("protocol", "")), str(port), policy, rule,
    )  # fmt: skip


def _lines(path: str, follow: bool) -> Iterator[str]:
    pending = ""
    position = 0
    while True:
        try:
            with open(path, encoding="utf-8") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
        except FileNotFoundError:
            if not follow:
                raise
            chunk = ""
        pending += chunk
        *complete, pending = pending.split("\n")
        yield from (line for line in complete if line.strip())
        if not follow:
            return
        time.sleep(0.2)  # tail -f: nothing to wait on for a plain file


@click.command("flows")
@click.option("--denied", is_flag=True, help="Only denied flows (all records today are).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as Felix appends.")
@click.option("--node", default=None, help="The node whose records to read.")
@click.option(
    "--directory",
    default=lambda: os.environ.get("FELIX_FLOWLOGSFILEDIRECTORY", DEFAULT_DIRECTORY),
    show_default=DEFAULT_DIRECTORY,
    help="Felix's flowLogsFileDirectory.",
)
@click.option("--output", "-o", type=click.Choice(["wide", "json"]), default="wide")
def flows(denied: bool, follow: bool, node: str | None, directory: str, output: str) -> None:
    """Print the flow records Felix logged on a node (docs/flows.md)."""
    path, filter_node = records_path(directory, node)
    if not follow and not os.path.exists(path):
        raise click.ClickException(f"no flow log at {path} (is flowLogsFileEnabled set?)")
    if output == "wide":
        click.echo("  ".join(COLUMNS))
    try:
        for line in _lines(path, follow):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if filter_node and record.get("node") != node:
                continue
            if denied and record.get("action") != "deny":
                continue
            click.echo(line if output == "json" else "  ".join(format_row(record)))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
