"""kube-controllers' health loop: the ``CalicoDatastore`` and ``KubeAPIServer`` conditions.

What it is: Calico's ``runHealthChecks`` (``kube-controllers/cmd/kube-controllers/main.go``):
a read of ClusterInformation ``default`` from etcd and a request to the API server (GET
/version), each with a timeout that starts at 4 s and doubles up to 16 s while checks fail;
every 10 s when all is well, every 2 s when not.  Each result goes to the status file
(``status.StatusFile``) that ``calico-kube-controllers -r`` / ``-l`` read.

What it is not: the status file format (``status``).
Invariant: a check never raises out of the loop; any failure is a not-ready condition whose
reason names what failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pycalico.datastore.api import DatastoreError, KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient, KubeError
from pycalico.kubecontrollers.status import StatusFile

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 4.0
MAX_TIMEOUT = 16.0
HEALTHY_INTERVAL = 10.0
UNHEALTHY_INTERVAL = 2.0


async def _check(
    status: StatusFile, key: str, what: str, probe: Callable[[], Awaitable[object]], timeout: float
) -> None:
    try:
        await asyncio.wait_for(probe(), timeout)
    except KeyNotFound:
        status.set_ready(key, True)  # the datastore answered; ClusterInformation comes later
    except (DatastoreError, KubeError, TimeoutError, OSError) as error:
        reason = f"Error {what}: {error or type(error).__name__}"
        log.error("health check: %s", reason)
        status.set_ready(key, False, reason)
    else:
        status.set_ready(key, True)


async def run_health_checks(status: StatusFile, store: ResourceStore, kube: KubeClient) -> None:
    """Until cancelled."""
    status.set_ready("CalicoDatastore", False, "initialized to false")
    status.set_ready("KubeAPIServer", False, "initialized to false")
    timeout = DEFAULT_TIMEOUT
    while True:
        await _check(
            status,
            "CalicoDatastore",
            "verifying datastore",
            lambda: store.get("ClusterInformation", "default"),
            timeout,
        )
        await _check(status, "KubeAPIServer", "reaching apiserver", kube.server_version, timeout)
        if status.ready():
            timeout = DEFAULT_TIMEOUT
            await asyncio.sleep(HEALTHY_INTERVAL)
        else:
            timeout = min(timeout * 2, MAX_TIMEOUT)
            await asyncio.sleep(UNHEALTHY_INTERVAL)
