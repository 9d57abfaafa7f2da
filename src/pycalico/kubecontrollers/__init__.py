"""calico/kube-controllers: keeps Calico's datastore in step with Kubernetes objects.

A component above both adapters: it reads Kubernetes through ``pycalico.k8s`` (list + watch,
the pure conversions, the Lease) and writes Calico resources through ``pycalico.datastore``.
``workers`` is the level-triggered engine (one worker per key); ``controllers`` and ``pods``
the policy, namespace, serviceaccount and workloadendpoint controllers built on it;
``registry`` the controllers by name; ``config`` and ``runconfig`` Calico's configuration;
``supervisor``, ``health``, ``status`` and ``metrics`` the executable's parts; ``main`` the
``calico-kube-controllers`` executable; ``compare`` the Kubernetes-vs-Calico check.
"""
