"""``make demo``: a guided tour of calicoctl against a throwaway etcd.

It starts a private etcd member (free loopback ports, temporary data directory), then runs the
real ``calicoctl`` executable exactly as a user would type it, with ``ETCD_ENDPOINTS`` pointing at
that member: apply the example manifests, list what was stored, show one resource in full,
label it, and show that an invalid manifest is refused with nothing written.  Every command is
printed before it runs, with its output below it.  etcd is stopped at the end, also on Ctrl-C or
a failure.

This is a demonstration, not a test: it exits non-zero only if a step that should succeed fails
(or one that should fail succeeds).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule

from pycalico.testing.etcd_server import EtcdServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

INVALID_MANIFEST = """\
# A good pool and a bad one: the whole file is
# validated first, so neither is written.
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: demo-good-pool
spec:
  cidr: 10.99.0.0/16
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: demo-bad-pool
spec:
  cidr: 10.98.0.0/16
  blockSize: 33
"""

console = Console(highlight=False)


class DemoFailed(Exception):
    pass


def calicoctl_path() -> str:
    """The calicoctl next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "calicoctl"
    if beside.exists():
        return str(beside)
    found = shutil.which("calicoctl")
    if found is None:
        raise DemoFailed("calicoctl is not installed: run `make setup` first")
    return found


def step(title: str, explanation: str) -> None:
    console.print()
    console.print(Rule(f"[bold]{title}"))
    console.print(explanation, style="dim")


def calicoctl(
    args: Sequence[str],
    env: dict[str, str],
    *,
    expect_failure: bool = False,
    stdin: str | None = None,
    piped_from: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run calicoctl as the user would, show the command line and what it printed."""
    shown = "calicoctl " + " ".join(shlex.quote(a) for a in args)
    prompt = f"{piped_from} | {shown}" if piped_from else shown
    console.print(f"[bold green]$[/] [bold]{prompt}[/]", markup=True, soft_wrap=True)
    done = subprocess.run(
        [calicoctl_path(), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    # soft_wrap: tables keep their lines however narrow the terminal is.
    if done.stdout:
        console.print(done.stdout.rstrip("\n"), markup=False, soft_wrap=True)
    if done.stderr:
        console.print(done.stderr.rstrip("\n"), style="red", markup=False, soft_wrap=True)
    console.print(f"[dim](exit status {done.returncode})[/]")
    if expect_failure and done.returncode == 0:
        raise DemoFailed(f"`{shown}` should have been refused but succeeded")
    if not expect_failure and done.returncode != 0:
        raise DemoFailed(f"`{shown}` failed")
    return done


def example_files() -> list[Path]:
    """The example manifests, pools first (policies may need them to make sense)."""
    preferred = ["pools.yaml", "policy.yaml", "all-kinds.yaml"]
    files = [EXAMPLES / name for name in preferred if (EXAMPLES / name).exists()]
    files += sorted(p for p in EXAMPLES.glob("*.yaml") if p not in files)
    return files


def tour(env: dict[str, str], workdir: Path) -> None:
    step(
        "1. Where calicoctl finds the datastore",
        "Like Calico's calicoctl, ours reads DATASTORE_TYPE and ETCD_ENDPOINTS from the "
        "environment (or a CalicoAPIConfig file given with -c). `version` shows the client "
        "and, once calico-node has initialised the cluster, the cluster's version.",
    )
    console.print(
        f"[bold green]$[/] export DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS={env['ETCD_ENDPOINTS']}"
    )
    calicoctl(["version"], env, expect_failure=True)
    console.print(
        "[dim]No ClusterInformation yet (calico-node writes it at startup), so the cluster "
        "version is unknown - calicoctl says so and exits non-zero, as Calico's does.[/]"
    )

    files = example_files()
    if not files:
        raise DemoFailed(f"no example manifests in {EXAMPLES}")
    step(
        "2. Apply the example manifests",
        "Each file is read and validated as a whole before anything is written. `apply` "
        "creates what is missing and replaces what exists.",
    )
    for path in files:
        relative = str(path.relative_to(REPO))
        text = path.read_text()
        readonly = [d for d in text.split("\n---\n") if "kind: ClusterInformation" in d]
        if not readonly:
            calicoctl(["apply", "-f", relative], env)
            continue
        calicoctl(["apply", "-f", relative], env, expect_failure=True)
        console.print(
            f"[yellow]{relative} holds a ClusterInformation. calico-node owns that resource, so "
            "calicoctl refuses to write it - and because one document was refused, nothing "
            "from the file was written. The same file without it:[/]"
        )
        rest = workdir / path.name.replace(".yaml", "-without-clusterinformation.yaml")
        rest.write_text("\n---\n".join(d for d in text.split("\n---\n") if d not in readonly))
        calicoctl(["apply", "-f", str(rest)], env)
    console.print("[dim]Input can also come from stdin, and applying again changes nothing:[/]")
    pools = EXAMPLES / "pools.yaml"
    if pools.exists():
        calicoctl(
            ["apply", "-f", "-"],
            env,
            stdin=pools.read_text(),
            piped_from=f"cat {pools.relative_to(REPO)}",
        )

    step(
        "3. List what is stored",
        "`get KIND` prints calicoctl's table; `-o wide` adds columns. Kinds are "
        "case-insensitive and take plurals and short names (ippools, pool, gnp, hep, ...).",
    )
    calicoctl(["get", "ippools", "-o", "wide"], env)
    calicoctl(["get", "globalnetworkpolicies", "-o", "wide"], env)
    calicoctl(["get", "networkpolicy", "-A", "-o", "wide"], env)
    calicoctl(["get", "nodes", "-o", "wide"], env, expect_failure=False)

    pool = _first_pool_name(env)
    if pool is not None:
        step(
            "4. One resource in full",
            "`-o yaml` prints the whole object, including what the datastore added: uid, "
            "creationTimestamp and resourceVersion (the etcd revision of its key).",
        )
        calicoctl(["get", "ippool", pool, "-o", "yaml"], env)
        step("5. Labels", "`label` adds, overwrites (--overwrite) or removes (--remove) one label.")
        calicoctl(["label", "ippool", pool, "demo=yes"], env)
        calicoctl(["label", "ippool", pool, "demo=again"], env, expect_failure=True)
        calicoctl(["label", "ippool", pool, "demo=again", "--overwrite"], env)
        calicoctl(["label", "ippool", pool, "demo", "--remove"], env)

    step(
        "6. An invalid manifest is refused, and nothing from it is written",
        "This file holds a valid pool and an invalid one (a block size of 33; IPv4 allows "
        "20-32). calicoctl names the document, the field and the problem, exits non-zero, "
        "and writes neither pool.",
    )
    bad = workdir / "invalid-pools.yaml"
    bad.write_text(INVALID_MANIFEST)
    console.print(Panel(INVALID_MANIFEST.rstrip(), title=str(bad), expand=False))
    calicoctl(["apply", "-f", str(bad)], env, expect_failure=True)
    calicoctl(["get", "ippool", "demo-good-pool"], env, expect_failure=True)
    console.print("[dim]demo-good-pool does not exist: the whole file was refused.[/]")


def _first_pool_name(env: dict[str, str]) -> str | None:
    done = subprocess.run(
        [calicoctl_path(), "get", "ippools", "-o", "name"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stdout.splitlines():
        if "/" in line:
            return line.rsplit("/", 1)[1]
    return None


def main() -> int:
    console.print(Rule("[bold]pycalico demo: calicoctl on a real etcd"))
    etcd = EtcdServer(name="demo")
    workdir = Path(tempfile.mkdtemp(prefix="pycalico-demo-"))
    try:
        console.print("Starting a private etcd member ...", style="dim")
        etcd.start()
        console.print(f"etcd is up at {etcd.endpoint} (data in {etcd.data_dir})", style="dim")
        env = dict(os.environ)
        env.pop("CALICO_ETCD_ENDPOINTS", None)
        env.update(DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=etcd.endpoint)
        tour(env, workdir)
    except KeyboardInterrupt:
        console.print("\nInterrupted.", style="yellow")
        return 130
    except DemoFailed as error:
        console.print(f"\nDemo failed: {error}", style="bold red")
        return 1
    finally:
        console.print("\nStopping etcd and removing its data ...", style="dim")
        etcd.close()
        shutil.rmtree(workdir, ignore_errors=True)
    console.print(Rule("[bold green]Demo finished"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
