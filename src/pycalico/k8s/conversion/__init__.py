"""Calico's conversions from Kubernetes objects to Calico's model, as pure functions.

What it is: the translations kube-controllers applies before writing to the datastore --
NetworkPolicy to a Calico NetworkPolicy ``knp.default.<name>`` (``network_policy``), Namespace
and ServiceAccount to Profiles ``kns.<ns>`` / ``ksa.<ns>.<sa>`` (``profiles``), and Pod to the
WorkloadEndpoint fields the pod controller keeps in sync (``pods``), with the selector and port
helpers they share (``selectors``, ``ports``).

What it is not: a client.  The input is a Kubernetes object in its wire form (a JSON-decoded
dict with camelCase keys, as the API server sends it); these modules do no I/O and do not import
the Kubernetes client library, so they are tested with plain dicts.

Invariants: a conversion is a function of its input alone (same object, same result); the
output carries only the metadata kube-controllers writes (name, and namespace where the kind is
namespaced), so an unchanged object never causes a write.
"""
