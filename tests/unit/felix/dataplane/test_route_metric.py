"""The route driver's metrics: workload routes at the normal priority, stale metric variants
of Felix's own routes swept, the CNI plugin's route taken over (pure, with the fake kernel)."""

from __future__ import annotations

import pytest

from pycalico.felix import messages as m
from pycalico.felix.config import ConfigError, load
from pycalico.felix.daemon import dataplane_options
from pycalico.felix.dataplane.routes import RouteManager
from pycalico.felix.drivers.routes import Route, RouteTable
from pycalico.testing.fake_kernel import FakeRoutes


def endpoint(v4: str = "10.65.0.1/32", v6: str = "fd00::1/128") -> m.WorkloadEndpointUpdate:
    return m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", "default/wl", "eth0"), "calia", "", (v4,), (v6,), (), ()
    )


def program(kernel: FakeRoutes, table: RouteTable, manager: RouteManager) -> None:
    manager.on_update(endpoint())
    manager.complete_deferred_work()
    assert table.apply() == 0


@pytest.fixture
def kernel() -> FakeRoutes:
    return FakeRoutes({"calia", "calib", "eth0"})


def test_workload_routes_default_to_the_normal_priority(kernel: FakeRoutes) -> None:
    table = RouteTable(kernel)
    program(kernel, table, RouteManager(table))
    assert [r.metric for r in kernel.by_destination("10.65.0.1/32")] == [1024]
    assert [r.metric for r in kernel.by_destination("fd00::1/128")] == [1024]


def test_configured_priorities_per_family(kernel: FakeRoutes) -> None:
    table = RouteTable(kernel)
    program(kernel, table, RouteManager(table, 2000, 3000))
    assert [r.metric for r in kernel.by_destination("10.65.0.1/32")] == [2000]
    assert [r.metric for r in kernel.by_destination("fd00::1/128")] == [3000]


def test_the_cni_route_is_replaced_by_felix_route(kernel: FakeRoutes) -> None:
    # What the CNI plugin leaves: protocol boot, no metric (IPv6: the kernel's 1024).
    kernel.add(Route("10.65.0.1/32", "calia", protocol=3, metric=0))
    kernel.add(Route("fd00::1/128", "calia", protocol=3, metric=1024))
    table = RouteTable(kernel)
    table.needs_resync = False  # the incremental path: a new workload after start-up
    program(kernel, table, RouteManager(table))
    assert kernel.by_destination("10.65.0.1/32") == [
        Route("10.65.0.1/32", "calia", protocol=80, metric=1024)
    ]
    # Same destination and metric: the kernel's replace took the plugin's IPv6 route over.
    assert kernel.by_destination("fd00::1/128") == [
        Route("fd00::1/128", "calia", protocol=80, metric=1024)
    ]


def test_resync_removes_the_cni_route_but_not_other_protocols_elsewhere(
    kernel: FakeRoutes,
) -> None:
    kernel.add(Route("10.65.0.1/32", "calia", protocol=3, metric=0))
    kernel.add(Route("fd00::1/128", "calia", protocol=3, metric=1024))
    kernel.add(Route("10.65.0.7/32", "calib", protocol=3, metric=0))  # not a workload of ours
    kernel.add(Route("10.65.0.1/32", "eth0", protocol=3, metric=5))  # another interface
    table = RouteTable(kernel)
    program(kernel, table, RouteManager(table, 1024, 2048))
    assert [(r.interface, r.protocol, r.metric) for r in kernel.by_destination("10.65.0.1/32")] == [
        ("eth0", 3, 5),
        ("calia", 80, 1024),
    ]
    assert [(r.protocol, r.metric) for r in kernel.by_destination("fd00::1/128")] == [(80, 2048)]
    assert kernel.by_destination("10.65.0.7/32") == [Route("10.65.0.7/32", "calib", protocol=3)]


def test_resync_sweeps_stale_metric_variants_of_our_own_routes(kernel: FakeRoutes) -> None:
    # A previous Felix (or a previous configuration) left metric 0 and 2000 routes.
    kernel.add(Route("10.65.0.1/32", "calia", protocol=80, metric=0))
    kernel.add(Route("10.65.0.1/32", "calia", protocol=80, metric=2000))
    kernel.add(Route("10.65.0.1/32", "calia", protocol=80, metric=1024))
    table = RouteTable(kernel)
    program(kernel, table, RouteManager(table))
    assert [r.metric for r in kernel.by_destination("10.65.0.1/32")] == [1024]


def test_metric_change_is_make_before_break(kernel: FakeRoutes) -> None:
    table = RouteTable(kernel)
    table.set_route(Route("10.65.0.1/32", "calia", metric=1024))
    table.apply()
    calls: list[tuple[str, int]] = []
    replace, delete = kernel.replace, kernel.delete
    kernel.replace = lambda r: (calls.append(("replace", r.metric)), replace(r))[1]  # type: ignore[method-assign]
    kernel.delete = lambda r: (calls.append(("delete", r.metric)), delete(r))[1]  # type: ignore[method-assign]
    table.set_route(Route("10.65.0.1/32", "calia", metric=500))
    table.apply()
    assert calls[:2] == [("replace", 500), ("delete", 1024)]
    assert [r.metric for r in kernel.by_destination("10.65.0.1/32")] == [500]


def test_removed_workload_route_is_deleted_at_its_metric(kernel: FakeRoutes) -> None:
    table = RouteTable(kernel)
    manager = RouteManager(table)
    program(kernel, table, manager)
    manager.on_update(m.WorkloadEndpointRemove(endpoint().id))
    manager.complete_deferred_work()
    table.apply()
    assert kernel.destinations() == set()


def test_config_fields_have_calico_names_ranges_and_defaults() -> None:
    config = load()
    assert (config.ipv4_normal_route_priority, config.ipv6_normal_route_priority) == (1024, 1024)
    assert config.ipv4_elevated_route_priority == config.ipv6_elevated_route_priority == 512
    options = dataplane_options(load({"ipv4NormalRoutePriority": "100"}, {}, {}))
    assert (options.route_priority_v4, options.route_priority_v6) == (100, 1024)
    assert load(environ={"FELIX_IPV6NORMALROUTEPRIORITY": "7"}).ipv6_normal_route_priority == 7
    for bad in ("0", "2147483647", "x"):
        with pytest.raises(ConfigError, match="ipv4NormalRoutePriority"):
            load({"ipv4NormalRoutePriority": bad})
    with pytest.raises(ConfigError, match="ipv6ElevatedRoutePriority"):
        load({"ipv6ElevatedRoutePriority": "-1"})
