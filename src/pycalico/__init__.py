"""pycalico: a container-networking system with Project Calico's architecture, in Python.

Layers (DESIGN.md §3): ``model`` and ``lib`` are pure; ``datastore`` is the only package that
talks to etcd; ``ipam`` allocates over the datastore; ``ctl`` is the operator's command line.
"""

__version__ = "0.1.0"
