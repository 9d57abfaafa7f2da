"""The datastore: Calico's etcd v3 key layout over a real etcd, and the only package that talks to it."""
