"""pycalico.bgp: confd (Calico's BGP processor, BIRD configuration) and the BIRD client."""
