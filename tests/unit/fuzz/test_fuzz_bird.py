"""Fuzzing the BIRD configuration renderer: whatever clusters, peers and secrets the datastore
holds, confd writes a ``bird.cfg`` that BIRD itself accepts (``bird -p``), or drops the one
unwritable value (a password BIRD's string syntax cannot carry) with a note — never a config
that stops BIRD from reloading, never a user string that breaks out of its quotes.

Inputs are generated as the datastore would hold them (model-valid resources), with the free
text — passwords, node and peer names, labels — drawn from arbitrary Unicode.
"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pycalico.bgp.bird import check_config
from pycalico.bgp.processor import BgpInputs, build
from pycalico.bgp.render import render
from pycalico.model.bgp import BGPConfiguration, BGPPeer
from pycalico.model.ipam import IPPool
from pycalico.model.node import Node

from .budgets import budget

pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD is not installed")

NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?", fullmatch=True)
AS_NUMBERS = st.integers(1, 4_294_967_295)
FREE_TEXT = st.text(max_size=40)


@st.composite
def clusters(draw: st.DrawFn) -> BgpInputs:
    count = draw(st.integers(1, 5))
    names = draw(st.lists(NAMES, min_size=count, max_size=count, unique=True))
    nodes: dict[str, Node] = {}
    for index, name in enumerate(names):
        bgp: dict[str, object] = {"ipv4Address": f"10.0.{index}.1/24"}
        if draw(st.booleans()):
            bgp["ipv6Address"] = f"fd00:{index}::1/64"
        if draw(st.booleans()):
            bgp["asNumber"] = draw(AS_NUMBERS)
        labels = draw(st.dictionaries(st.sampled_from(["rr", "zone"]), st.sampled_from(["a", "b"])))
        nodes[name] = Node.model_validate(
            {"metadata": {"name": name, "labels": labels}, "spec": {"bgp": bgp}}
        )
    peers = []
    passwords: dict[tuple[str | None, str], str] = {}
    for index in range(draw(st.integers(0, 3))):
        spec: dict[str, object] = {"asNumber": draw(AS_NUMBERS)}
        if draw(st.booleans()):
            spec["peerIP"] = str(ipaddress.IPv4Address(0x0A630000 + index + 1))
        else:
            spec["peerSelector"] = "zone == 'a'"
        if draw(st.booleans()):
            spec["password"] = {"secretKeyRef": {"name": "bgp", "key": f"k{index}"}}
            passwords[("bgp", f"k{index}")] = draw(FREE_TEXT)
        peers.append(BGPPeer.model_validate({"metadata": {"name": f"peer-{index}"}, "spec": spec}))
    mesh_secret = {"secretKeyRef": {"name": "bgp", "key": "mesh"}}
    passwords[("bgp", "mesh")] = draw(FREE_TEXT)
    default = BGPConfiguration.model_validate(
        {
            "metadata": {"name": "default"},
            "spec": {
                "asNumber": draw(AS_NUMBERS),
                "nodeToNodeMeshEnabled": draw(st.booleans()),
                "nodeMeshPassword": mesh_secret,
                "logSeverityScreen": draw(st.sampled_from(["Info", "Debug", "Warning"])),
            },
        }
    )
    pool = IPPool.model_validate(
        {"metadata": {"name": "p"}, "spec": {"cidr": "192.168.0.0/16", "natOutgoing": True}}
    )
    return BgpInputs(
        node_name=names[0],
        nodes=nodes,
        configs={"default": default},
        peers=peers,
        pools=[pool],
        affinities={"192.168.1.0/26": "confirmed"},
        passwords=passwords,
    )


@budget(40)
@given(clusters())
def test_bird_accepts_every_rendered_config(inputs: BgpInputs) -> None:
    text = render(build(inputs))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bird.cfg"
        path.write_text(text)
        assert check_config(str(path)) is None, text


@budget(40)
@given(FREE_TEXT)
@example('a"; } protocol static evil { route 0.0.0.0/0 blackhole; } #')
@example("line\nbreak")
@example("back\\slash")
@example("nul\x00byte")
def test_a_password_never_breaks_out_of_its_quotes(password: str) -> None:
    peer = BGPPeer.model_validate(
        {
            "metadata": {"name": "tor"},
            "spec": {
                "peerIP": "10.0.0.254",
                "asNumber": 65000,
                "password": {"secretKeyRef": {"name": "bgp", "key": "tor"}},
            },
        }
    )
    node = Node.model_validate(
        {"metadata": {"name": "n1"}, "spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}}}
    )
    inputs = BgpInputs(
        node_name="n1", nodes={"n1": node}, peers=[peer], passwords={("bgp", "tor"): password}
    )
    text = render(build(inputs))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bird.cfg"
        path.write_text(text)
        assert check_config(str(path)) is None, text
    assert "protocol static evil" not in text.replace(f'password "{password}"', "")
