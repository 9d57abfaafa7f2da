"""kube-controllers' configuration merge: Calico's precedence (runconfig.go) as tables."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.kubecontrollers.config import (
    ConfigError,
    ControllerConfig,
    ElectionConfig,
    EnvConfig,
    NodeControllerConfig,
    default_configuration,
    merge_config,
)


def default_spec() -> dict[str, Any]:
    spec: dict[str, Any] = default_configuration().spec.model_dump(by_alias=True, exclude_none=True)
    return spec


def test_default_resource_is_calicos() -> None:
    resource = default_configuration()
    assert resource.metadata.name == "default"
    assert default_spec() == {
        "logSeverityScreen": "Info",
        "healthChecks": "Enabled",
        "etcdV3CompactionPeriod": "10m0s",
        "controllers": {
            "node": {
                "reconcilerPeriod": "5m0s",
                "syncLabels": "Enabled",
                "hostEndpoint": {"autoCreate": "Disabled"},
                "leakGracePeriod": "15m0s",
            },
            "policy": {"reconcilerPeriod": "5m0s"},
            "workloadEndpoint": {"reconcilerPeriod": "5m0s"},
            "serviceAccount": {"reconcilerPeriod": "5m0s"},
            "namespace": {"reconcilerPeriod": "5m0s"},
        },
    }


def test_default_resource_and_no_environment() -> None:
    config, status = merge_config({}, default_spec())
    assert config.enabled == ("namespace", "node", "policy", "serviceaccount", "workloadendpoint")
    assert config.controllers["policy"] == ControllerConfig(300.0)
    assert config.node == NodeControllerConfig(
        sync_labels=True,
        auto_host_endpoints=False,
        host_endpoint={"autoCreate": "Disabled", "createDefaultHostEndpoint": "Enabled"},
        delete_nodes=True,
        leak_grace_period=900.0,
    )
    assert (config.log_level, config.health_enabled, config.prometheus_port) == ("Info", True, 0)
    assert config.etcd_v3_compaction_period == 600.0
    assert status == {
        "environmentVars": {},
        "runningConfig": {
            "logSeverityScreen": "Info",
            "healthChecks": "Enabled",
            "etcdV3CompactionPeriod": "10m0s",
            "controllers": {
                "node": {
                    "syncLabels": "Enabled",
                    "hostEndpoint": {
                        "autoCreate": "Disabled",
                        "createDefaultHostEndpoint": "Enabled",
                    },
                    "leakGracePeriod": "15m0s",
                },
                "policy": {"reconcilerPeriod": "5m0s"},
                "workloadEndpoint": {"reconcilerPeriod": "5m0s"},
                "serviceAccount": {"reconcilerPeriod": "5m0s"},
                "namespace": {"reconcilerPeriod": "5m0s"},
            },
        },
    }


def test_environment_overrides_the_resource_and_is_reported() -> None:
    spec = default_spec()
    spec["logSeverityScreen"] = "Debug"
    spec["controllers"]["policy"]["reconcilerPeriod"] = "1m"
    env = {
        "LOG_LEVEL": "warning",
        "ENABLED_CONTROLLERS": "policy,profile",
        "RECONCILER_PERIOD": "30s",
        "COMPACTION_PERIOD": "0",
        "HEALTH_ENABLED": "false",
    }
    config, status = merge_config(env, spec)
    assert config.enabled == ("namespace", "policy")
    assert config.node is None
    assert config.controllers["policy"] == ControllerConfig(30.0)
    assert config.log_level == "Warning"
    assert config.etcd_v3_compaction_period == 0
    assert config.health_enabled is False
    assert status["environmentVars"] == env
    running = status["runningConfig"]
    assert running["logSeverityScreen"] == "Warning"
    assert running["healthChecks"] == "Disabled"
    assert running["etcdV3CompactionPeriod"] == "0s"
    assert running["controllers"] == {
        "policy": {"reconcilerPeriod": "30s"},
        "namespace": {"reconcilerPeriod": "30s"},
    }


def test_without_enabled_controllers_the_resource_decides() -> None:
    spec = default_spec()
    del spec["controllers"]["node"]
    del spec["controllers"]["workloadEndpoint"]
    spec["controllers"]["namespace"] = {}
    spec["prometheusMetricsPort"] = 9094
    config, status = merge_config({}, spec)
    assert config.enabled == ("namespace", "policy", "serviceaccount")
    assert config.controllers["namespace"] == ControllerConfig(300.0)  # unset: Calico's 5m
    assert status["runningConfig"]["controllers"]["namespace"] == {}
    assert config.prometheus_port == 9094


@pytest.mark.parametrize(
    ("env", "api", "sync", "auto"),
    [
        ({}, {"syncLabels": "Disabled"}, False, False),
        ({"SYNC_NODE_LABELS": "true"}, {"syncLabels": "Disabled"}, True, False),
        (
            {"AUTO_HOST_ENDPOINTS": "enabled"},
            {"hostEndpoint": {"autoCreate": "Disabled"}},
            True,
            True,
        ),
        ({}, {"hostEndpoint": {"autoCreate": "Enabled"}}, True, True),
        (
            {"AUTO_HOST_ENDPOINTS": "disabled"},
            {"hostEndpoint": {"autoCreate": "Enabled"}},
            True,
            False,
        ),
    ],
)
def test_node_settings(env: dict[str, str], api: dict[str, Any], sync: bool, auto: bool) -> None:
    config, status = merge_config(env, {"controllers": {"node": api}})
    assert config.node is not None
    assert (config.node.sync_labels, config.node.auto_host_endpoints) == (sync, auto)
    node_status = status["runningConfig"]["controllers"]["node"]
    assert node_status["syncLabels"] == ("Enabled" if sync else "Disabled")
    assert config.node.leak_grace_period is None  # not in the resource: the GC decides


def test_an_unknown_log_level_in_the_resource_means_info() -> None:
    config, _ = merge_config({}, {"logSeverityScreen": "Loud"})
    assert config.log_level == "Info"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"ENABLED_CONTROLLERS": "policy,bogus"}, "ENABLED_CONTROLLERS"),
        ({"ENABLED_CONTROLLERS": "flannelmigration"}, "ENABLED_CONTROLLERS"),
        ({"RECONCILER_PERIOD": "5 minutes"}, "RECONCILER_PERIOD"),
        ({"COMPACTION_PERIOD": "x"}, "COMPACTION_PERIOD"),
        ({"HEALTH_ENABLED": "yes"}, "HEALTH_ENABLED"),
        ({"ENABLED_CONTROLLERS": "node", "SYNC_NODE_LABELS": "maybe"}, "SYNC_NODE_LABELS"),
        ({"ENABLED_CONTROLLERS": "node", "AUTO_HOST_ENDPOINTS": "on"}, "AUTO_HOST_ENDPOINTS"),
    ],
)
def test_a_bad_environment_value_is_an_error_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        merge_config(env, default_spec())


def test_env_config() -> None:
    config = EnvConfig.from_env(
        {"KUBECONFIG": "/k", "LOG_LEVEL": "debug", "RECONCILER_PERIOD": "1m", "HOME": "/root"}
    )
    assert config.kubeconfig == "/k"
    assert config.datastore_type == "etcdv3"
    assert config.overrides == {"LOG_LEVEL": "debug", "RECONCILER_PERIOD": "1m"}
    with pytest.raises(ConfigError, match="DATASTORE_TYPE=kubernetes is not supported"):
        EnvConfig.from_env({"DATASTORE_TYPE": "kubernetes"})
    with pytest.raises(ConfigError, match="DATASTORE_TYPE"):
        EnvConfig.from_env({"DATASTORE_TYPE": "consul"})


def test_election_config() -> None:
    assert ElectionConfig.from_env({}) == ElectionConfig()
    config = ElectionConfig.from_env(
        {
            "LEADER_ELECTION_LEASE_DURATION": "4s",
            "LEADER_ELECTION_RENEW_DEADLINE": "3s",
            "LEADER_ELECTION_RETRY_PERIOD": "500ms",
            "POD_NAME": "kc-1",
        }
    )
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (4, 3, 0.5)
    assert config.identity == "kc-1"
    with pytest.raises(ConfigError, match="LEADER_ELECTION_RETRY_PERIOD < "):
        ElectionConfig.from_env({"LEADER_ELECTION_RENEW_DEADLINE": "20s"})
    with pytest.raises(ConfigError, match="LEADER_ELECTION"):
        ElectionConfig.from_env({"LEADER_ELECTION": "sometimes"})
