"""IPReservation: Calico's accepted forms (CIDR of either family, unmasked allowed, bare address),
refusals that name the field and index, calicoctl's aliases, and the etcd key."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.datastore import paths
from pycalico.model.codec import encode_resource, load_documents
from pycalico.model.ipam import IPReservation
from pycalico.model.kinds import lookup_kind
from pycalico.model.validation import ValidationFailure


def reservation(*cidrs: str) -> str:
    items = "".join(f"  - {c!r}\n" for c in cidrs)
    return (
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: r1\n"
        f"spec:\n  reservedCIDRs:\n{items}"
    )


def test_accepted_forms_are_stored_as_written() -> None:
    written = ["10.0.0.5/30", "10.1.1.1", "cafe:f00d::/123", "fd00::1", "192.168.0.0/16"]
    (resource,) = load_documents(reservation(*written), "r")
    assert isinstance(resource, IPReservation)
    assert list(resource.issues()) == []
    # Calico's client keeps the text (no masking): calicoctl get shows it back unchanged.
    assert encode_resource(resource)["spec"] == {"reservedCIDRs": written}
    assert resource.networks == [
        ipaddress.ip_network("10.0.0.4/30"),
        ipaddress.ip_network("10.1.1.1/32"),
        ipaddress.ip_network("cafe:f00d::/123"),
        ipaddress.ip_network("fd00::1/128"),
        ipaddress.ip_network("192.168.0.0/16"),
    ]


def test_empty_spec_is_valid() -> None:
    (resource,) = load_documents(
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: empty\n", "r"
    )
    assert list(resource.issues()) == []
    assert encode_resource(resource).get("spec", {}) == {}


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("10.0.0.0/33", "not a valid CIDR"),
        ("not-an-ip", "not a valid CIDR"),
        ("", "not a valid CIDR"),
        ("10.0.0.0/255.255.0.0", "not a valid CIDR"),
        ("fe80::1%eth0", "zone"),
        ("10.0.0.1/24/8", "not a valid CIDR"),
        ("::/129", "not a valid CIDR"),
    ],
)
def test_invalid_entry_is_refused_naming_field_and_index(bad: str, words: str) -> None:
    with pytest.raises(ValidationFailure) as caught:
        load_documents(reservation("10.0.0.0/30", bad), "r")
    message = str(caught.value)
    assert "spec.reservedCIDRs[1]" in message
    assert words in message
    assert "reservedCIDRs[0]" not in message


def test_wrong_type_is_refused_naming_the_field() -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: r1\n"
        "spec:\n  reservedCIDRs: 10.0.0.0/30\n"
    )
    with pytest.raises(ValidationFailure) as caught:
        load_documents(text, "r")
    assert "reservedCIDRs" in str(caught.value)


@pytest.mark.parametrize(
    "alias", ["ipreservation", "ipreservations", "reservation", "reservations", "IPReservation"]
)
def test_calicoctl_aliases(alias: str) -> None:
    info = lookup_kind(alias)
    assert info.kind == "IPReservation" and not info.namespaced


def test_etcd_key_is_calicos() -> None:
    info = lookup_kind("ipreservation")
    assert paths.resource_key(info, "r1") == (
        "/calico/resources/v3/projectcalico.org/ipreservations/r1"
    )
    assert paths.parse_resource_key(paths.resource_key(info, "r1")) == (
        "ipreservations",
        None,
        "r1",
    )
