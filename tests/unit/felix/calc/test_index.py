"""The label index: exact against brute force, and incremental (counted evaluations)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.felix.calc import CalcGraph
from pycalico.felix.calc.index import InheritIndex, SelectorIndex
from pycalico.model.selectors import parse
from pycalico.testing.felix_calc import HOSTNAME, global_policy, profile, workload

SELECTOR_TEXTS = [
    "all()",
    "a == '1'",
    "a == '1' && b == '2'",
    "a in {'1', '2'}",
    "has(b)",
    "!has(a)",
    "a != '1'",
    "a == '1' || b == '1'",
    "!(a == '2') && has(c)",
    "c not in {'1'}",
]
LABELS = st.dictionaries(st.sampled_from("abc"), st.sampled_from("123"), max_size=3)
_TERMS = st.one_of(
    st.builds("{} == '{}'".format, st.sampled_from("abc"), st.sampled_from("123")),
    st.builds("{} != '{}'".format, st.sampled_from("abc"), st.sampled_from("123")),
    st.builds(
        "{} in {{'{}', '{}'}}".format,
        st.sampled_from("abc"),
        st.sampled_from("123"),
        st.sampled_from("123"),
    ),
    st.builds("{} not in {{'{}'}}".format, st.sampled_from("abc"), st.sampled_from("123")),
    st.builds("has({})".format, st.sampled_from("abc")),
    st.builds("!has({})".format, st.sampled_from("abc")),
    st.just("all()"),
)
RANDOM_SELECTORS = st.recursive(
    _TERMS,
    lambda inner: st.one_of(
        st.builds("({}) && ({})".format, inner, inner),
        st.builds("({}) || ({})".format, inner, inner),
        st.builds("!({})".format, inner),
    ),
    max_leaves=5,
)
OPERATION = st.one_of(
    st.tuples(
        st.just("selector"),
        st.integers(0, 3),
        st.one_of(st.sampled_from(SELECTOR_TEXTS), RANDOM_SELECTORS),
    ),
    st.tuples(st.just("unselector"), st.integers(0, 3), st.none()),
    st.tuples(st.just("item"), st.integers(0, 4), LABELS),
    st.tuples(st.just("unitem"), st.integers(0, 4), st.none()),
    st.tuples(st.just("parent"), st.integers(0, 1), LABELS),
    st.tuples(st.just("parents"), st.integers(0, 4), st.lists(st.integers(0, 1), max_size=2)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(OPERATION, max_size=40))
def test_matches_equal_brute_force_and_callbacks_agree(operations: list[tuple]) -> None:  # type: ignore[type-arg]
    seen: set[tuple[int, int]] = set()

    def started(selector: int, item: int) -> None:
        assert (selector, item) not in seen
        seen.add((selector, item))

    def stopped(selector: int, item: int) -> None:
        seen.remove((selector, item))

    index: SelectorIndex[int, int] = SelectorIndex(started, stopped)
    inherit: InheritIndex[int, int] = InheritIndex(index)
    selectors: dict[int, str] = {}
    own: dict[int, tuple[dict[str, str], list[str]]] = {}
    parents: dict[str, dict[str, str]] = {}
    for kind, number, value in operations:
        if kind == "selector":
            selectors[number] = value
            index.update_selector(number, parse(value))
        elif kind == "unselector":
            selectors.pop(number, None)
            index.delete_selector(number)
        elif kind == "item":
            names = own.get(number, ({}, []))[1]
            own[number] = (value, names)
            inherit.update_item(number, value, names)
        elif kind == "unitem":
            own.pop(number, None)
            inherit.delete_item(number)
        elif kind == "parent":
            parents[f"p{number}"] = value
            inherit.update_parent(f"p{number}", value)
        elif kind == "parents" and number in own:
            names = [f"p{n}" for n in value]
            own[number] = (own[number][0], names)
            inherit.update_item(number, own[number][0], names)

        def effective(item: int) -> dict[str, str]:
            labels, names = own[item]
            merged: dict[str, str] = {}
            for name in reversed(names):
                merged.update(parents.get(name, {}))
            return {**merged, **labels}

        expected = {
            (s, i)
            for s, text in selectors.items()
            for i in own
            if parse(text).evaluate(effective(i))
        }
        assert seen == expected
        for s in selectors:
            assert index.matches(s) == {i for (t, i) in expected if t == s}


@pytest.mark.parametrize(
    ("selector", "before", "after"),
    [
        ("a == '1'", {"a": "2"}, {"a": "1"}),  # demanded value
        ("has(a)", {"b": "1"}, {"a": "1", "b": "1"}),  # demanded presence
        ("!has(a)", {"a": "1"}, {}),  # demanded absence
        ("a != '1'", {"a": "1"}, {"a": "2"}),  # no demand on the label
        ("a == '1' || b == '1'", {"a": "2"}, {"a": "2", "b": "1"}),  # demand only per branch
        ("all()", {}, {"z": "1"}),  # reads nothing
    ],
)
def test_each_kind_of_demand_moves_an_item_in_and_out(
    selector: str, before: dict[str, str], after: dict[str, str]
) -> None:
    seen: set[tuple[int, int]] = set()
    index: SelectorIndex[int, int] = SelectorIndex(
        lambda s, i: seen.add((s, i)), lambda s, i: seen.remove((s, i))
    )
    index.update_selector(1, parse(selector))
    matches_before = parse(selector).evaluate(before)
    index.update_item(7, before)
    assert seen == ({(1, 7)} if matches_before else set())
    index.update_item(7, after)
    assert seen == ({(1, 7)} if parse(selector).evaluate(after) else set())
    index.update_item(7, before)
    assert seen == ({(1, 7)} if matches_before else set())
    index.delete_item(7)
    assert seen == set()


def _big_graph(endpoints: int, policies: int) -> CalcGraph:
    graph = CalcGraph(HOSTNAME)
    for number in range(endpoints):
        graph.on_resource(
            workload(
                f"pod{number}",
                labels={"app": f"app{number % 500}", "tier": "t"},
                ips=[f"10.1.{number // 256}.{number % 256}"],
            )
        )
    for number in range(policies):
        graph.on_resource(
            global_policy(
                f"p{number}",
                selector=f"app == 'app{number % 500}'",
                ingress=[{"action": "Allow", "source": {"selector": f"app == 'app{number}'"}}],
            )
        )
    graph.flush()
    return graph


def test_label_change_evaluates_only_selectors_that_could_change() -> None:
    graph = _big_graph(1000, 1000)
    before = graph.local_index.evaluations + graph.members.selector_index.evaluations
    graph.on_resource(workload("pod7", labels={"app": "app8", "tier": "t"}, ips=["10.1.0.7"]))
    graph.flush()
    spent = graph.local_index.evaluations + graph.members.selector_index.evaluations - before
    # The policies on app7 (stop) and app8 (start), and the IP sets of app7/app8: a handful.
    assert spent <= 12, spent
    # A change to a label no selector reads evaluates nothing.
    before = graph.local_index.evaluations + graph.members.selector_index.evaluations
    graph.on_resource(workload("pod7", labels={"app": "app8", "tier": "u"}, ips=["10.1.0.7"]))
    graph.flush()
    assert graph.local_index.evaluations + graph.members.selector_index.evaluations == before


def test_adding_an_endpoint_does_not_rescan() -> None:
    graph = _big_graph(1000, 1000)
    before = graph.local_index.evaluations + graph.members.selector_index.evaluations
    graph.on_resource(workload("pod1000", labels={"app": "app3"}, ips=["10.9.9.9"]))
    messages = graph.flush()
    spent = graph.local_index.evaluations + graph.members.selector_index.evaluations - before
    assert spent <= 6, spent
    assert len(messages) <= 3  # the endpoint, and a delta for the app3 set


def test_policy_change_recomputes_only_that_policys_matches() -> None:
    graph = _big_graph(1000, 1000)
    endpoint_work = graph.stats.endpoint_computations
    before = graph.local_index.evaluations
    graph.on_resource(
        global_policy("p5", selector="app == 'app6'", order=3, ingress=[{"action": "Deny"}])
    )
    graph.flush()
    # Candidates are the two pods of app6 plus the two it matched before (app5).
    assert graph.local_index.evaluations - before <= 4
    assert graph.stats.endpoint_computations - endpoint_work == 4


def test_profile_label_change_relabels_only_its_endpoints() -> None:
    graph = CalcGraph(HOSTNAME)
    for number in range(200):
        graph.on_resource(
            workload(
                f"pod{number}", ips=[f"10.2.0.{number}"], profiles=[f"prof{number % 2}"], labels={}
            )
        )
    graph.on_resource(global_policy("blue", selector="team == 'blue'", ingress=[]))
    graph.flush()
    endpoint_work = graph.stats.endpoint_computations
    graph.on_resource(profile("prof0", labels_to_apply={"team": "blue"}))
    graph.flush()
    assert graph.stats.endpoint_computations - endpoint_work == 100
