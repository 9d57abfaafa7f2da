"""pycalico.cni: the CNI plugins (``calico``, ``calico-ipam``) and their shared wire formats.

Kept import-free on purpose: the plugin executables must start with standard-library imports
only, and importing this package must not pull anything else in.
"""
