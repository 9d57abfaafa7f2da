"""Felix config: parsing, Calico's precedence, restart-only fields."""

from __future__ import annotations

import pytest

from pycalico.felix import config
from pycalico.felix.rules.model import FailsafePort


def test_built_in_defaults_follow_calico() -> None:
    effective = config.load(default_hostname="node-1")
    assert effective.hostname == "node-1"
    assert effective["interfacePrefix"] == ("cali",)
    assert effective["defaultEndpointToHostAction"] == "Drop"
    assert effective["reportingInterval"] == 30 and effective["reportingTTL"] == 90
    assert effective["healthPort"] == 9099 and effective["healthHost"] == "localhost"
    assert effective["deviceRouteProtocol"] == 80
    assert FailsafePort("tcp", 22) in effective["failsafeInboundHostPorts"]
    assert FailsafePort("udp", 53) in effective["failsafeOutboundHostPorts"]
    assert effective.status_region() == "no-region"


def test_precedence_env_over_file_over_datastore_over_default() -> None:
    datastore = {"healthPort": "9100", "logPrefix": "ds", "reportingInterval": "1m30s"}
    file_values = {"HealthPort": "9200", "LogPrefix": "file"}
    environ = {"FELIX_HEALTHPORT": "9300", "PATH": "/bin"}
    effective = config.load(datastore, file_values, environ, "n")
    assert effective["healthPort"] == 9300 and effective.sources["healthPort"] == "env"
    assert effective["logPrefix"] == "file" and effective.sources["logPrefix"] == "file"
    assert effective["reportingInterval"] == 90.0
    assert effective.sources["reportingInterval"] == "datastore"
    assert effective.sources["vxlanPort"] == "default"


def test_values_parse_in_calico_forms() -> None:
    effective = config.load(
        {
            "interfacePrefix": "cali,tap",
            "failsafeInboundHostPorts": "tcp:22,udp:10.0.0.0/8:68",
            "ipv6Support": "false",
            "reportingTTL": "2m",
            "defaultEndpointToHostAction": "accept",
        },
        default_hostname="n",
    )
    assert effective["interfacePrefix"] == ("cali", "tap")
    assert effective["failsafeInboundHostPorts"] == (
        FailsafePort("tcp", 22),
        FailsafePort("udp", 68, "10.0.0.0/8"),
    )
    assert effective["ipv6Support"] is False
    assert effective["reportingTTL"] == 120
    assert effective["defaultEndpointToHostAction"] == "Accept"
    render = effective.render()
    assert render.interface_prefixes == ("cali", "tap")
    assert render.default_endpoint_to_host_action == "Accept"


def test_bad_value_names_field_source_and_value() -> None:
    with pytest.raises(config.ConfigError, match=r"healthPort \(from env\).*'abc'"):
        config.load(environ={"FELIX_HEALTHPORT": "abc"})
    with pytest.raises(config.ConfigError, match="defaultEndpointToHostAction"):
        config.load({"defaultEndpointToHostAction": "Maybe"})


def test_restart_needed_only_for_restart_only_fields() -> None:
    old = config.load(default_hostname="n")
    live = config.load(
        {"logSeverityScreen": "Debug", "reportingInterval": "5"}, default_hostname="n"
    )
    assert config.restart_needed(old, live) == []
    changed = config.load({"defaultEndpointToHostAction": "Accept"}, default_hostname="n")
    assert config.restart_needed(old, changed) == ["defaultEndpointToHostAction"]


def test_config_file_is_ini_global_section(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "felix.cfg"
    path.write_text("[global]\nHealthEnabled = true\nMetadataAddr = None\n")
    values = config.read_config_file(str(path))
    assert config.load(file_values=values, default_hostname="n")["healthEnabled"] is True
    assert config.read_config_file(str(path) + ".missing") == {}


def test_calico_datastore_environment_is_honoured_below_felix_names() -> None:
    environ = {"ETCD_ENDPOINTS": "http://10.0.0.1:2379", "CALICO_DISABLE_FILE_LOGGING": "true"}
    effective = config.load(environ=environ, default_hostname="n")
    assert effective["etcdEndpoints"] == ("http://10.0.0.1:2379",)
    assert effective["logFilePath"] == "none"
    environ["FELIX_ETCDENDPOINTS"] = "http://10.0.0.2:2379"
    assert config.load(environ=environ, default_hostname="n")["etcdEndpoints"] == (
        "http://10.0.0.2:2379",
    )
