"""Test support shipped with the package: real-process launchers (etcd) and fakes for pure unit tests."""
