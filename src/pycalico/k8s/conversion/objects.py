"""Reading Kubernetes objects in their wire form: the few metadata fields the conversions need.

An object is a JSON-decoded dict as the API server sends it (camelCase keys).  A field that is
required and missing or of the wrong type raises ``ConversionError`` naming the field; optional
fields read as empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KubeObject = Mapping[str, Any]


class ConversionError(ValueError):
    """A Kubernetes object that cannot be converted; the message names the field."""


def _metadata(obj: KubeObject) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ConversionError("metadata: is missing")
    return metadata


def name_of(obj: KubeObject) -> str:
    name = _metadata(obj).get("name")
    if not isinstance(name, str) or not name:
        raise ConversionError("metadata.name: is missing")
    return name


def namespace_of(obj: KubeObject) -> str:
    """The object's namespace; Calico reads a missing one as the empty string."""
    namespace = _metadata(obj).get("namespace") or ""
    if not isinstance(namespace, str):
        raise ConversionError("metadata.namespace: must be a string")
    return namespace


def labels_of(obj: KubeObject) -> dict[str, str]:
    labels = _metadata(obj).get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ConversionError("metadata.labels: must be a map of strings")
    return {str(key): str(value) for key, value in labels.items()}


def annotations_of(obj: KubeObject) -> dict[str, str]:
    annotations = _metadata(obj).get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise ConversionError("metadata.annotations: must be a map of strings")
    return {str(key): str(value) for key, value in annotations.items()}


def spec_of(obj: KubeObject) -> Mapping[str, Any]:
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise ConversionError("spec: must be an object")
    return spec
