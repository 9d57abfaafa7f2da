"""Runtime helpers for network namespaces: commands, sockets and threads inside them, free
ports, and a connectivity checker that sends real packets between namespaces.

What it is: the namespace plumbing that the lab (``calico-lab``) runs on and that the test
support in ``pycalico.testing`` builds on (``pycalico.testing`` re-exports these names).  What
it is not: the CNI plugin's kernel work (``pycalico.cni.netns``), Felix's dataplane, or test
support; nothing here imports ``pycalico.testing`` or any layer above it.

Modules: ``namespace`` (``ip``/``nsenter`` commands, ``enter``, ``socket_in_netns``),
``ports`` (``free_port``), ``connectivity`` (``ConnectivityChecker``).
"""
