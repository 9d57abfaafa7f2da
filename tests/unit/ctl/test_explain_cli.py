"""``calicoctl explain`` in-process over the in-memory store: text, json, yaml, errors.

The datastore is ``MemoryKVStore`` under the real ``ResourceStore`` (as ``test_cli``); the
computation is checked against the Felix matrices in ``tests/unit/felix/calc``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pycalico.ctl import client
from pycalico.ctl.main import cli
from pycalico.datastore.resources import ResourceStore
from pycalico.felix.calc import key_of
from pycalico.model.codec import encode_value
from pycalico.model.meta import Resource
from pycalico.model.node import FelixConfiguration
from pycalico.testing import felix_calc as build
from pycalico.testing.memory_kv import MemoryKVStore

KNP = build.policy(
    "knp.default.web-80",
    namespace="default",
    selector="role == 'web'",
    types=["Ingress"],
    ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}],
)


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryKVStore]:
    kv = MemoryKVStore()

    def run(config_file: str | None, work: Callable[[ResourceStore], Awaitable[Any]]) -> Any:
        return asyncio.run(work(ResourceStore(kv)))  # type: ignore[arg-type]

    monkeypatch.setattr(client, "run", run)
    resources: list[Resource] = [
        build.namespace_profile("default"),
        build.workload("client", ips=["10.1.0.1"], labels={"role": "client"}),
        build.workload("web", ips=["10.1.0.2"], labels={"role": "web"}),
        KNP,
    ]

    async def put() -> None:
        for resource in resources:
            await kv.put(key_of(resource), encode_value(resource))

    asyncio.run(put())
    yield kv


def calicoctl(*args: str) -> Any:
    return CliRunner().invoke(cli, ["explain", *args])


def test_text_names_the_policy_its_kubernetes_object_and_the_rule(memory: MemoryKVStore) -> None:
    result = calicoctl("--from", "default/client", "--to", "default/web", "--port", "80")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Verdict: ALLOW" in out
    assert "NetworkPolicy default/knp.default.web-80" in out
    assert "from Kubernetes NetworkPolicy default/web-80" in out
    assert "rule 0 (allow): MATCHES -> allow" in out
    assert 'selects the endpoint: (role == "web"' in out


def test_denied_port_ends_the_tier_and_json_says_so(memory: MemoryKVStore) -> None:
    result = calicoctl("--from", "10.1.0.1", "--to", "default/web", "--port", "81", "-o", "json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["verdict"] == "deny"
    tier = answer["ingress"]["tiers"][0]
    assert tier["outcome"] == "end-of-tier-deny"
    assert tier["policies"][0]["kubernetes"] == "NetworkPolicy default/web-80"
    assert tier["policies"][0]["rules"][0]["mismatch"] == "destination ports"
    assert answer["egress"]["verdict"] == "allow"


def test_external_source_has_no_egress_side_yaml(memory: MemoryKVStore) -> None:
    result = calicoctl(
        "--from", "192.0.2.9", "--to", "10.1.0.2", "--protocol", "icmp", "-o", "yaml"
    )
    assert result.exit_code == 0, result.output
    answer = yaml.safe_load(result.stdout)
    assert answer["egress"] is None
    assert answer["packet"]["protocol"] == "icmp"
    assert answer["verdict"] == "deny"


def test_unknown_pod_is_an_error_naming_it(memory: MemoryKVStore) -> None:
    result = calicoctl("--from", "default/nope", "--to", "default/web")
    assert result.exit_code == 1
    assert "'default/nope'" in result.stderr


def _felix_configuration(name: str, spec: dict[str, Any]) -> Resource:
    return FelixConfiguration.model_validate({"metadata": {"name": name}, "spec": spec})


def test_felix_configuration_node_over_global_as_felix_merges_it(memory: MemoryKVStore) -> None:
    """DefaultEndpointToHostAction and failsafe ports from FelixConfiguration: ``default``
    for every node, ``node.<name>`` overriding it for its node."""
    resources: list[Resource] = [
        build.host_endpoint("node-a-eth0", ips=["192.168.0.1"]),
        build.host_endpoint("node-b-eth0", node="node-b", ips=["192.168.0.2"]),
        _felix_configuration("default", {"defaultEndpointToHostAction": "Accept",
                                         "failsafeInboundHostPorts": [{"protocol": "TCP", "port": 8022}]}),
        _felix_configuration("node.node-b", {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 9022}]}),
    ]  # fmt: skip

    async def put() -> None:
        for resource in resources:
            await memory.put(key_of(resource), encode_value(resource))

    asyncio.run(put())

    def verdict(source: str, destination: str, port: int) -> str:
        args = ("--from", source, "--to", destination, "--port", str(port), "-o", "json")
        result = calicoctl(*args)
        assert result.exit_code == 0, result.output
        return str(json.loads(result.stdout)["verdict"])

    # A pod to its own host (node-a): the global Accept, not Felix's built-in Drop.
    assert verdict("default/web", "192.168.0.1", 8080) == "allow"
    # Failsafe inbound ports: node-a has the global list (8022, not the built-in 22) ...
    assert verdict("192.0.2.9", "hostendpoint/node-a-eth0", 8022) == "allow"
    assert verdict("192.0.2.9", "192.168.0.1", 22) == "deny"
    # ... node-b its own.
    assert verdict("192.0.2.9", "192.168.0.2", 9022) == "allow"
    assert verdict("192.0.2.9", "192.168.0.2", 8022) == "deny"


def test_verify_from_an_external_source_is_an_error_saying_why(memory: MemoryKVStore) -> None:
    # Before any namespace or kernel is touched: root, and a workload to send the probe from.
    result = calicoctl("--from", "192.0.2.9", "--to", "default/web", "--verify")
    assert result.exit_code == 1
    assert "--verify needs root" in result.stderr or "needs a workload endpoint as the source" in (
        result.stderr
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_verify_refuses_a_host_endpoint_side_instead_of_tracing_the_wrong_chain(
    memory: MemoryKVStore,
) -> None:
    async def put() -> None:
        hep = build.host_endpoint("node-a-eth0", ips=["192.168.0.1"])
        await memory.put(key_of(hep), encode_value(hep))

    asyncio.run(put())
    result = calicoctl("--from", "default/web", "--to", "hostendpoint/node-a-eth0", "--verify")
    assert result.exit_code == 1
    assert "workload endpoint sides only" in result.stderr
