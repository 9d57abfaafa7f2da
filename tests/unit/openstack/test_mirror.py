"""The resync plan (pure): missing objects created, different ones updated with their revision,
stale owned ones deleted, everything else left alone."""

from __future__ import annotations

from pycalico.openstack import mirror, translate
from pycalico.openstack.etcd_gateway import KeyValue, prefix_end


def kv(key: str, value: str, revision: int = 7) -> KeyValue:
    return KeyValue(key, value.encode(), revision)


def test_plan_makes_etcd_equal_neutron_and_touches_nothing_else() -> None:
    keep = translate.policy("sg-keep", [])
    changed = translate.policy("sg-changed", [])
    desired = {
        translate.policy_key("sg-keep"): keep,
        translate.policy_key("sg-changed"): changed,
        translate.policy_key("sg-new"): translate.policy("sg-new", []),
    }
    stale_wep = translate.WEP_PREFIX + "h-openstack-vm-openstack-gone"
    foreign = translate.POLICY_PREFIX + "admin-policy"
    stored = {
        translate.policy_key("sg-keep"): kv(
            translate.policy_key("sg-keep"), translate.encode(keep)
        ),
        translate.policy_key("sg-changed"): kv(translate.policy_key("sg-changed"), '{"old": 1}', 9),
        stale_wep: kv(stale_wep, "{}", 11),
        foreign: kv(foreign, "{}", 12),
    }
    plan = mirror.plan(desired, stored)
    assert list(plan.create) == [translate.policy_key("sg-new")]
    assert plan.update == {translate.policy_key("sg-changed"): (translate.encode(changed), 9)}
    assert plan.delete == {stale_wep: 11}
    assert len(plan) == 3
    assert (
        len(
            mirror.plan(
                desired, {**stored, **{k: kv(k, translate.encode(v)) for k, v in desired.items()}}
            )
        )
        == 1
    )


def test_prefix_end() -> None:
    assert prefix_end("/calico/") == b"/calico0"
    assert prefix_end("/calico/felix/v2/") == b"/calico/felix/v20"
