"""The controllers kube-controllers can run, by their ``ENABLED_CONTROLLERS`` name.

What it is: ``CONTROLLERS``, a name -> ``ControllerFactory`` table, and ``register_controller``
to add one.  A factory takes a ``ControllerContext`` (the clients and the running configuration)
and returns a ``Runnable``: an object whose ``run()`` coroutine keeps the controller going
until it is cancelled.  The executable (``main``) starts one per enabled name while it is the
leader, and cancels them all when it stops leading or the configuration changes.

Adding a controller (the node controller is added this way)::

    register_controller("node", lambda context: NodeController(context.kube, context.store,
                                                               context.config.node))

``context.config.node`` is the node controller's merged settings (``syncLabels``,
``leakGracePeriod``, host endpoints) -- None only if node is not enabled.

What it is not: the supervision (``main``).  Invariant: a name is registered at most once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.kubecontrollers.config import RunConfig
from pycalico.kubecontrollers.controllers import NAMESPACE, POLICY, SERVICE_ACCOUNT, controller
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

CONTROLLERS: dict[str, ControllerFactory] = {
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
