"""``calico-lab``: a multi-node Calico cluster on one machine, nodes as network namespaces.

``cluster`` brings it up and down, ``pods`` runs the real ``calico`` CNI plugin the way a
container runtime does, ``matrix`` checks pod-to-pod connectivity, ``cli`` is the command line.
"""
