"""ListWatcher's reading of raw watch events (the server side is tested in tests/integration/k8s)."""

from __future__ import annotations

import pytest

from pycalico.k8s.client import KubeError
from pycalico.k8s.watch import Bookmark, Changed, ListWatcher


def raw(kind: str, version: str) -> dict[str, object]:
    obj = {"metadata": {"resourceVersion": version}}
    return {"type": kind, "object": obj, "raw_object": obj}


def test_a_bookmark_carries_only_its_version() -> None:
    assert ListWatcher._event(raw("BOOKMARK", "42")) == Bookmark(resource_version="42")


@pytest.mark.parametrize("kind", ["ADDED", "MODIFIED", "DELETED"])
def test_changes_keep_their_type_and_version(kind: str) -> None:
    event = ListWatcher._event(raw(kind, "7"))
    assert isinstance(event, Changed)
    assert (event.type, event.resource_version) == (kind, "7")


def test_an_unknown_event_type_is_an_error_naming_it() -> None:
    with pytest.raises(KubeError, match="'SURPRISE'"):
        ListWatcher._event(raw("SURPRISE", "1"))
