"""The controllers kube-controllers can run, by their ``ENABLED_CONTROLLERS`` name.

What it is: ``CONTROLLERS``, a name -> ``ControllerFactory`` table, and ``register_controller``
to add one.  A factory takes a ``ControllerContext`` (the clients and the running configuration)
and returns a ``Runnable``: an object whose ``run()`` coroutine keeps the controller going
until it is cancelled.  The executable (``main``) starts one per enabled name while it is the
leader, and cancels them all when it stops leading or the configuration changes.

The node controller (``node``, with the IPAM garbage collector and its Prometheus sink) gets
``context.config.node``, the merged node settings (``syncLabels``, ``leakGracePeriod``, host
endpoints).  Adding another controller::

    register_controller("name", lambda context: SomeController(context.kube, context.store))

What it is not: the supervision (``main``).  Invariant: a name is registered at most once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.kubecontrollers import node
from pycalico.kubecontrollers.config import DEFAULT_LEAK_GRACE_PERIOD, RunConfig
from pycalico.kubecontrollers.config import NodeControllerConfig as NodeSettings
from pycalico.kubecontrollers.controllers import NAMESPACE, POLICY, SERVICE_ACCOUNT, controller
from pycalico.kubecontrollers.node_ipam_prometheus import PrometheusIPAMMetrics
from pycalico.kubecontrollers.pods import pod_controller


class Runnable(Protocol):
    async def run(self) -> None: ...


@dataclass(frozen=True)
class ControllerContext:
    kube: KubeClient
    kv: KVStore
    store: ResourceStore
    config: RunConfig

    def reconciler_period(self, name: str) -> float:
        settings = self.config.controllers.get(name)
        if settings is None:
            raise KeyError(f"controller {name!r} is not enabled")
        return settings.reconciler_period


ControllerFactory = Callable[[ControllerContext], Runnable]

_IPAM_METRICS: list[PrometheusIPAMMetrics] = []  # one sink per process (registered once)


def _node_controller(context: ControllerContext) -> Runnable:
    """kube-controllers' node settings -> the node controller's (``node``).  An unset or zero
    leakGracePeriod: the resource's default (15m) and "disabled" (None) respectively."""
    settings = context.config.node or NodeSettings()
    grace = settings.leak_grace_period
    if not _IPAM_METRICS:
        _IPAM_METRICS.append(PrometheusIPAMMetrics.register())
    config = node.NodeControllerConfig(
        sync_labels=settings.sync_labels,
        leak_grace_period=DEFAULT_LEAK_GRACE_PERIOD if grace is None else (grace or None),
    )
    return node.node_controller(
        context.kube, context.store, config=config, metrics=_IPAM_METRICS[0]
    )


CONTROLLERS: dict[str, ControllerFactory] = {
    "node": _node_controller,
    "policy": lambda c: controller(
        c.kube, c.store, POLICY, reconciler_period=c.reconciler_period("policy")
    ),
    "namespace": lambda c: controller(
        c.kube, c.store, NAMESPACE, reconciler_period=c.reconciler_period("namespace")
    ),
    "serviceaccount": lambda c: controller(
        c.kube,
        c.store,
        SERVICE_ACCOUNT,
        reconciler_period=c.reconciler_period("serviceaccount"),
    ),
    "workloadendpoint": lambda c: pod_controller(
        c.kube, c.store, reconciler_period=c.reconciler_period("workloadendpoint")
    ),
}


def register_controller(name: str, factory: ControllerFactory) -> None:
    """Make ``name`` (as ENABLED_CONTROLLERS spells it) runnable."""
    if name in CONTROLLERS:
        raise ValueError(f"controller {name!r} is already registered")
    CONTROLLERS[name] = factory
