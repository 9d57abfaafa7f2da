"""Effective Felix configuration from the datastore: FelixConfiguration ``default`` + ``node.<host>``.

What it is: the datastore layer of Calico's config precedence (reference §3.7): a field set in
``node.<hostname>`` overrides the same field in ``default``; unset fields are absent (the daemon
supplies built-in defaults, environment and config file, which rank above both).  Values are
rendered as the strings Felix's own config parser reads.  What it is not: parsing, defaults or
restart-only handling (the daemon).

Format of ``ConfigUpdate.values``: ``(name, value)`` pairs sorted by name, where ``name`` is the
FelixConfiguration field's v3 JSON name (``interfacePrefix``, ``ipipEnabled``, ...) and the value
is: ``"true"``/``"false"`` for booleans, decimal for numbers (integral floats without a
fraction), Go's rendering for durations (as stored, e.g. ``"1m30s"``), lists comma-joined with
protocol ports as ``"tcp:22"`` (``"tcp:10.0.0.0/8:22"`` with a net) and an empty list as
``"none"``, other objects as compact JSON.
"""

from __future__ import annotations

import json
from typing import Any

from pycalico.felix.messages import ConfigUpdate
from pycalico.model.node import FelixConfiguration

GLOBAL_CONFIG_NAME = "default"


def node_config_name(hostname: str) -> str:
    return f"node.{hostname}"


def _render_item(value: Any) -> str:
    if isinstance(value, dict) and "protocol" in value and "port" in value:
        protocol = str(value["protocol"]).lower()
        net = value.get("net")
        return f"{protocol}:{net}:{value['port']}" if net else f"{protocol}:{value['port']}"
    return render_value(value)


def render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list):
        # An empty list set on purpose (no failsafe ports) is Felix's "none", not unset.
        return ",".join(_render_item(item) for item in value) if value else "none"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _fields(config: FelixConfiguration | None) -> dict[str, Any]:
    if config is None:
        return {}
    dumped: dict[str, Any] = config.spec.model_dump(
        mode="json", by_alias=True, exclude_unset=True, exclude_none=True
    )
    # Empty strings are Go's zero value (e.g. the always-stored ``bpfLogLevel: ""``): unset.
    return {name: value for name, value in dumped.items() if value != ""}


def effective_config(
    global_config: FelixConfiguration | None, node_config: FelixConfiguration | None
) -> ConfigUpdate:
    merged = _fields(global_config)
    merged.update(_fields(node_config))
    return ConfigUpdate(tuple(sorted((name, render_value(v)) for name, v in merged.items())))
