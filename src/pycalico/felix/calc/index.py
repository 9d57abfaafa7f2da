"""The incremental label index: which selectors match which labelled items, kept up to date.

What it is: ``SelectorIndex`` (Go Felix's ``labelindex``) matches a changing population of
selectors against a changing population of items (endpoints, network sets), and reports each
match as it starts and stops; ``InheritIndex`` sits in front of it and folds in labels that items
inherit from parents (profiles' ``labelsToApply``; an item's own label wins, then the earlier
parent).  What it is not: Calico semantics of which labels an endpoint has (``labels.py``) or
what a match means (policy activation, IP-set members: the callers).

How it stays incremental (every path evaluates only selectors that could change their answer):

* A new item is tried only against selectors *anchored* on one of its labels (a label every
  match must carry, keyed by value when the selector demands one of known values), plus the
  few selectors with no such label.
* A new or changed selector is tried only against the items carrying its anchor, plus the items
  it matched before.
* A label change on an item tries only the selectors that read a changed label, narrowed by what
  each demands of that label (present with one of some values / present / absent): a selector
  whose answer flips must read a changed label, and its demand on it must hold afterwards.

Invariants: after every call, ``matches(s)`` is exactly ``{i : s.evaluate(labels(i))}``; a
callback fires once per started or stopped match, never for an unchanged one; ``evaluations``
counts every selector evaluation (tests use it to prove incrementality).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from pycalico.model.selectors import NAMESPACE_LABEL, LabelRestriction, Selector

S = TypeVar("S", bound=Hashable)
I = TypeVar("I", bound=Hashable)  # noqa: E741 - the conventional name for an item id
Labels = Mapping[str, str]
MatchCallback = Callable[[S, I], None]

_GENERIC_LABELS = frozenset({NAMESPACE_LABEL, "projectcalico.org/orchestrator"})


def _anchor_score(label: str, restriction: LabelRestriction) -> tuple[int, int, int]:
    # Prefer a demanded value (narrowest bucket), then a label few items share the same value
    # of: namespace and orchestrator labels are on every pod, so they anchor badly.
    generic = label in _GENERIC_LABELS or label.startswith(("pcns.", "pcsa."))
    values = len(restriction.one_of) if restriction.one_of is not None else 0
    return (restriction.one_of is None, generic, values)


def _anchor(selector: Selector) -> tuple[str, frozenset[str] | None] | None:
    """The label every match must carry (and its allowed values, if known), or None."""
    best: tuple[str, LabelRestriction] | None = None
    for label, restriction in selector.restrictions.items():
        if not restriction.must_be_present:
            continue
        if best is None or _anchor_score(label, restriction) < _anchor_score(*best):
            best = (label, restriction)
    if best is None:
        return None
    return best[0], best[1].one_of


def _add(table: dict[str, set[S]], key: str, value: S) -> None:
    table.setdefault(key, set()).add(value)


def _discard(table: dict[str, set[S]], key: str, value: S) -> None:
    bucket = table.get(key)
    if bucket is not None:
        bucket.discard(value)
        if not bucket:
            del table[key]


class SelectorIndex(Generic[S, I]):
    """Selectors (by id ``S``) against items (by id ``I``) with start/stop match callbacks."""

    def __init__(
        self,
        on_match_started: MatchCallback[S, I],
        on_match_stopped: MatchCallback[S, I],
    ) -> None:
        self._started = on_match_started
        self._stopped = on_match_stopped
        self.evaluations = 0
        self._items: dict[I, dict[str, str]] = {}
        self._items_by_label: dict[str, dict[str, set[I]]] = {}
        self._selectors: dict[S, Selector] = {}
        # For new items: selectors by anchor label (and value), and the unanchored rest.
        self._anchored_values: dict[str, dict[str, set[S]]] = {}
        self._anchored_present: dict[str, set[S]] = {}
        self._unanchored: set[S] = set()
        # For label changes: per label read, one bucket per selector by what it demands.
        self._read_values: dict[str, dict[str, set[S]]] = {}
        self._read_present: dict[str, set[S]] = {}
        self._read_absent: dict[str, set[S]] = {}
        self._read_other: dict[str, set[S]] = {}
        self._matches: dict[S, set[I]] = {}
        self._item_matches: dict[I, set[S]] = {}

    # --- queries ------------------------------------------------------------------------------

    def matches(self, selector_id: S) -> frozenset[I]:
        return frozenset(self._matches.get(selector_id, ()))

    def has_matches(self, selector_id: S) -> bool:
        return selector_id in self._matches

    def selectors_matching(self, item_id: I) -> frozenset[S]:
        return frozenset(self._item_matches.get(item_id, ()))

    def labels(self, item_id: I) -> Labels | None:
        return self._items.get(item_id)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    # --- selectors ----------------------------------------------------------------------------

    def update_selector(self, selector_id: S, selector: Selector) -> None:
        old = self._selectors.get(selector_id)
        if old == selector:
            return
        if old is not None:
            self._unindex_selector(selector_id, old)
        self._selectors[selector_id] = selector
        self._index_selector(selector_id, selector)
        before = self._matches.get(selector_id, set())
        candidates = set(before)
        candidates.update(self._candidate_items(selector))
        after = {i for i in candidates if self._evaluate(selector, self._items[i])}
        for item_id in before - after:
            self._stop(selector_id, item_id)
        for item_id in after - before:
            self._start(selector_id, item_id)

    def delete_selector(self, selector_id: S) -> None:
        old = self._selectors.pop(selector_id, None)
        if old is None:
            return
        self._unindex_selector(selector_id, old)
        for item_id in list(self._matches.get(selector_id, ())):
            self._stop(selector_id, item_id)

    def _candidate_items(self, selector: Selector) -> Iterable[I]:
        anchor = _anchor(selector)
        if anchor is None:
            return self._items.keys()
        label, values = anchor
        by_value = self._items_by_label.get(label, {})
        if values is None:
            return [i for bucket in by_value.values() for i in bucket]
        return [i for value in values for i in by_value.get(value, ())]

    def _index_selector(self, selector_id: S, selector: Selector) -> None:
        anchor = _anchor(selector)
        if anchor is None:
            self._unanchored.add(selector_id)
        elif anchor[1] is None:
            _add(self._anchored_present, anchor[0], selector_id)
        else:
            table = self._anchored_values.setdefault(anchor[0], {})
            for value in anchor[1]:
                _add(table, value, selector_id)
        restrictions = selector.restrictions
        for label in selector.labels:
            restriction = restrictions.get(label)
            if restriction is not None and restriction.one_of is not None:
                table = self._read_values.setdefault(label, {})
                for value in restriction.one_of:
                    _add(table, value, selector_id)
            elif restriction is not None and restriction.must_be_present:
                _add(self._read_present, label, selector_id)
            elif restriction is not None and restriction.must_be_absent:
                _add(self._read_absent, label, selector_id)
            else:
                _add(self._read_other, label, selector_id)

    def _unindex_selector(self, selector_id: S, selector: Selector) -> None:
        anchor = _anchor(selector)
        if anchor is None:
            self._unanchored.discard(selector_id)
        elif anchor[1] is None:
            _discard(self._anchored_present, anchor[0], selector_id)
        else:
            table = self._anchored_values.get(anchor[0], {})
            for value in anchor[1]:
                _discard(table, value, selector_id)
        restrictions = selector.restrictions
        for label in selector.labels:
            restriction = restrictions.get(label)
            if restriction is not None and restriction.one_of is not None:
                table = self._read_values.get(label, {})
                for value in restriction.one_of:
                    _discard(table, value, selector_id)
            else:
                for buckets in (self._read_present, self._read_absent, self._read_other):
                    _discard(buckets, label, selector_id)

    # --- items --------------------------------------------------------------------------------

    def update_item(self, item_id: I, labels: Labels) -> None:
        new = dict(labels)
        old = self._items.get(item_id)
        if old == new:
            return
        if old is None:
            candidates = self._selectors_for_new_item(new)
            current: set[S] = set()
        else:
            changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
            current = set(self._item_matches.get(item_id, ()))
            candidates = self._selectors_for_changed_labels(changed, new)
            candidates.update(
                s for s in current if not self._selectors[s].labels.isdisjoint(changed)
            )
            self._unindex_item(item_id, old)
        self._items[item_id] = new
        self._index_item(item_id, new)
        for selector_id in candidates:
            matched = self._evaluate(self._selectors[selector_id], new)
            if matched and selector_id not in current:
                self._start(selector_id, item_id)
            elif not matched and selector_id in current:
                self._stop(selector_id, item_id)

    def delete_item(self, item_id: I) -> None:
        old = self._items.pop(item_id, None)
        if old is None:
            return
        self._unindex_item(item_id, old)
        for selector_id in list(self._item_matches.get(item_id, ())):
            self._stop(selector_id, item_id)

    def _selectors_for_new_item(self, labels: Labels) -> set[S]:
        candidates = set(self._unanchored)
        for label, value in labels.items():
            present = self._anchored_present.get(label)
            if present:
                candidates.update(present)
            by_value = self._anchored_values.get(label)
            if by_value:
                candidates.update(by_value.get(value, ()))
        return candidates

    def _selectors_for_changed_labels(self, changed: set[str], labels: Labels) -> set[S]:
        candidates: set[S] = set()
        for label in changed:
            candidates.update(self._read_other.get(label, ()))
            if label in labels:
                candidates.update(self._read_present.get(label, ()))
                candidates.update(self._read_values.get(label, {}).get(labels[label], ()))
            else:
                candidates.update(self._read_absent.get(label, ()))
        return candidates

    def _index_item(self, item_id: I, labels: Labels) -> None:
        for label, value in labels.items():
            _add(self._items_by_label.setdefault(label, {}), value, item_id)

    def _unindex_item(self, item_id: I, labels: Labels) -> None:
        for label, value in labels.items():
            by_value = self._items_by_label.get(label)
            if by_value is not None:
                _discard(by_value, value, item_id)
                if not by_value:
                    del self._items_by_label[label]

    # --- matching -----------------------------------------------------------------------------

    def _evaluate(self, selector: Selector, labels: Labels) -> bool:
        self.evaluations += 1
        return selector.evaluate(labels)

    def _start(self, selector_id: S, item_id: I) -> None:
        self._matches.setdefault(selector_id, set()).add(item_id)
        self._item_matches.setdefault(item_id, set()).add(selector_id)
        self._started(selector_id, item_id)

    def _stop(self, selector_id: S, item_id: I) -> None:
        matched = self._matches[selector_id]
        matched.discard(item_id)
        if not matched:
            del self._matches[selector_id]
        item_matches = self._item_matches[item_id]
        item_matches.discard(selector_id)
        if not item_matches:
            del self._item_matches[item_id]
        self._stopped(selector_id, item_id)


class InheritIndex(Generic[S, I]):
    """A ``SelectorIndex`` whose items also carry the labels of their parents (profiles).

    An item's effective labels are its parents' labels, the earlier parent winning, overlaid by
    its own labels.  A parent's label change re-labels only the items that name that parent.
    """

    def __init__(self, index: SelectorIndex[S, I]) -> None:
        self.index = index
        self._own: dict[I, tuple[dict[str, str], tuple[str, ...]]] = {}
        self._parents: dict[str, dict[str, str]] = {}
        self._children: dict[str, set[I]] = {}

    def update_item(self, item_id: I, labels: Labels, parents: Iterable[str] = ()) -> None:
        parent_ids = tuple(parents)
        previous = self._own.get(item_id)
        if previous is not None:
            for parent in previous[1]:
                _discard(self._children, parent, item_id)
        self._own[item_id] = (dict(labels), parent_ids)
        for parent in parent_ids:
            _add(self._children, parent, item_id)
        self.index.update_item(item_id, self._effective(item_id))

    def delete_item(self, item_id: I) -> None:
        previous = self._own.pop(item_id, None)
        if previous is None:
            return
        for parent in previous[1]:
            _discard(self._children, parent, item_id)
        self.index.delete_item(item_id)

    def update_parent(self, parent: str, labels: Labels | None) -> None:
        new = dict(labels or {})
        if self._parents.get(parent, {}) == new:
            return
        if new:
            self._parents[parent] = new
        else:
            self._parents.pop(parent, None)
        for item_id in list(self._children.get(parent, ())):
            self.index.update_item(item_id, self._effective(item_id))

    def _effective(self, item_id: I) -> dict[str, str]:
        own, parents = self._own[item_id]
        if not parents:
            return own
        merged: dict[str, str] = {}
        for parent in reversed(parents):
            merged.update(self._parents.get(parent, {}))
        merged.update(own)
        return merged
