"""Namespaces and ServiceAccounts to Calico Profiles, as kube-controllers writes them.

Calico's facts followed here:

* Namespace ``<ns>`` -> Profile ``kns.<ns>`` with one Allow ingress rule and one Allow egress
  rule (no other fields), and ``labelsToApply`` = every namespace label with the prefix ``pcns.``
  plus ``pcns.projectcalico.org/name: <ns>`` (so a namespaceSelector can match a namespace by
  name).  Annotations (e.g. the old ``net.beta.kubernetes.io/network-policy``) are ignored.
* ServiceAccount ``<sa>`` in ``<ns>`` -> Profile ``ksa.<ns>.<sa>`` (an empty namespace reads as
  ``default``) with no rules and ``labelsToApply`` = every label prefixed ``pcsa.`` plus
  ``pcsa.projectcalico.org/name: <sa>``.
* Only the name is kept in the Profile's metadata (kube-controllers drops UID, times and
  versions so that an unchanged object never causes a write).  Calico's converter also derives
  a UID from the object's and fails on one that is not a UUID; objects from an API server always
  have one, so that check is not repeated here.
"""

from __future__ import annotations

from pydantic import ValidationError

from pycalico.k8s.conversion.objects import (
    ConversionError,
    KubeObject,
    labels_of,
    name_of,
    namespace_of,
)
from pycalico.model.endpoints import Profile

NAMESPACE_PROFILE_PREFIX = "kns."
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_PROFILE_PREFIX = "ksa."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
NAME_LABEL = "projectcalico.org/name"


def namespace_profile_name(namespace: str) -> str:
    return NAMESPACE_PROFILE_PREFIX + namespace


def service_account_profile_name(namespace: str, service_account: str) -> str:
    return f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace or 'default'}.{service_account}"


def profile_namespace(profile_name: str) -> str | None:
    """The namespace a ``kns.`` Profile stands for, or None for any other Profile."""
    if not profile_name.startswith(NAMESPACE_PROFILE_PREFIX):
        return None
    return profile_name.removeprefix(NAMESPACE_PROFILE_PREFIX)


def profile_service_account(profile_name: str) -> tuple[str, str] | None:
    """(namespace, service account) of a ``ksa.`` Profile, or None for any other Profile.
    The namespace has no dots, so the first dot after the prefix ends it."""
    if not profile_name.startswith(SERVICE_ACCOUNT_PROFILE_PREFIX):
        return None
    namespace, dot, account = profile_name.removeprefix(SERVICE_ACCOUNT_PROFILE_PREFIX).partition(
        "."
    )
    return (namespace, account) if dot else None


def _profile(name: str, spec: dict[str, object]) -> Profile:
    try:
        return Profile.model_validate({"metadata": {"name": name}, "spec": spec})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConversionError(f"Profile {name}: {where}: {first['msg']}") from error


def namespace_profile(namespace: KubeObject) -> Profile:
    """The Profile for Kubernetes Namespace ``namespace`` (wire form)."""
    name = name_of(namespace)
    labels = {NAMESPACE_LABEL_PREFIX + key: value for key, value in labels_of(namespace).items()}
    labels[NAMESPACE_LABEL_PREFIX + NAME_LABEL] = name
    return _profile(
        namespace_profile_name(name),
        {
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": labels,
        },
    )


def service_account_profile(service_account: KubeObject) -> Profile:
    """The Profile for Kubernetes ServiceAccount ``service_account`` (wire form)."""
    name = name_of(service_account)
    labels = {
        SERVICE_ACCOUNT_LABEL_PREFIX + key: value
        for key, value in labels_of(service_account).items()
    }
    labels[SERVICE_ACCOUNT_LABEL_PREFIX + NAME_LABEL] = name
    return _profile(
        service_account_profile_name(namespace_of(service_account), name),
        {"labelsToApply": labels},
    )
