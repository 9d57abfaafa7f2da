"""The Kubernetes adapter: the only package that talks to a Kubernetes API server.

It wraps the ``kubernetes_asyncio`` client (see docs/kubernetes.md for why that one) behind a
small interface: ``client`` (connect from a kubeconfig, typed errors), ``watch`` (list + watch
that resumes from a resourceVersion, follows bookmarks and re-lists on 410 Gone) and the
calico-node feedback writers (``node_feedback``).  Everything else in pycalico reaches
Kubernetes through these modules; the import-linter contract "Only pycalico.k8s talks to
Kubernetes" enforces it.
"""
