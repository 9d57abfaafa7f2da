"""Calico for OpenStack: the Neutron ML2 mechanism driver ``calico`` (etcd mirrors Neutron).

Runs inside Neutron's own virtualenv: standard library, Neutron and these modules only (import
contract ``openstack``).  See docs/openstack.md.
"""
