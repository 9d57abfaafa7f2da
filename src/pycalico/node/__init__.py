"""pycalico.node: calico-node (startup, IP autodetection, supervision of its daemons)."""
