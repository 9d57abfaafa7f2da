"""Felix config: parsing, Calico's precedence, restart-only fields."""

from __future__ import annotations

import pytest

from pycalico.felix import config
from pycalico.felix.rules.model import FailsafePort


def test_built_in_defaults_follow_calico() -> None:
    effective = config.load(default_hostname="node-1")
    assert effective.hostname == "node-1"
    assert effective.interface_prefix == ("cali",)
    assert effective.default_endpoint_to_host_action == "Drop"
    assert effective.reporting_interval == 30 and effective.reporting_ttl == 90
    assert effective.health_port == 9099 and effective.health_host == "localhost"
    assert effective.device_route_protocol == 80
    assert FailsafePort("tcp", 22) in effective.failsafe_inbound_host_ports
    assert FailsafePort("udp", 53) in effective.failsafe_outbound_host_ports
    assert effective.status_region() == "no-region"


def test_precedence_env_over_file_over_datastore_over_default() -> None:
    datastore = {"healthPort": "9100", "logPrefix": "ds", "reportingInterval": "1m30s"}
    file_values = {"HealthPort": "9200", "LogPrefix": "file"}
    environ = {"FELIX_HEALTHPORT": "9300", "PATH": "/bin"}
    effective = config.load(datastore, file_values, environ, "n")
    assert effective.health_port == 9300 and effective.sources["healthPort"] == "env"
    assert effective.log_prefix == "file" and effective.sources["logPrefix"] == "file"
    assert effective.reporting_interval == 90.0
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
    assert effective.interface_prefix == ("cali", "tap")
    assert effective.failsafe_inbound_host_ports == (
        FailsafePort("tcp", 22),
        FailsafePort("udp", 68, "10.0.0.0/8"),
    )
    assert effective.ipv6_support is False
    assert effective.reporting_ttl == 120
    assert effective.default_endpoint_to_host_action == "Accept"
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
    assert config.load(file_values=values, default_hostname="n").health_enabled is True
    assert config.read_config_file(str(path) + ".missing") == {}


def test_settings_are_typed_attributes_named_after_calico_fields() -> None:
    effective = config.load(default_hostname="n")
    assert effective.value("HealthPort") == effective.health_port == 9099
    assert effective.ip_forwarding == "Enabled"
    assert {f.name for f in config.FIELDS} >= {"ipForwarding", "healthPort", "etcdEndpoints"}
    with pytest.raises(KeyError):
        effective.value("noSuchField")


def test_calico_datastore_environment_is_honoured_below_felix_names() -> None:
    environ = {"ETCD_ENDPOINTS": "http://10.0.0.1:2379", "CALICO_DISABLE_FILE_LOGGING": "true"}
    effective = config.load(environ=environ, default_hostname="n")
    assert effective.etcd_endpoints == ("http://10.0.0.1:2379",)
    assert effective.log_file_path == "none"
    environ["FELIX_ETCDENDPOINTS"] = "http://10.0.0.2:2379"
    assert config.load(environ=environ, default_hostname="n").etcd_endpoints == (
        "http://10.0.0.2:2379",
    )


def test_ip_forwarding_reaches_the_dataplane_options() -> None:
    from pycalico.felix.daemon import dataplane_options

    assert dataplane_options(config.load(default_hostname="n")).ip_forwarding is True
    disabled = config.load({"ipForwarding": "Disabled"}, default_hostname="n")
    assert dataplane_options(disabled).ip_forwarding is False
