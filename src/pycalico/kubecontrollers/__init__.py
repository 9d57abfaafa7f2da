"""calico/kube-controllers: keeps Calico's datastore in step with Kubernetes objects.

A component above both adapters: it reads Kubernetes through ``pycalico.k8s`` (list + watch,
the pure conversions) and writes Calico resources through ``pycalico.datastore``.  ``workers``
is the level-triggered engine (one worker per key); ``controllers`` the policy and namespace
controllers built on it.
"""
