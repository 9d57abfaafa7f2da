"""Install the CNI plugins and a conflist on a node, the way Calico's ``install-cni`` does.

What it is: ``install(options)`` writes the ``calico`` and ``calico-ipam`` executables into the
CNI binary directory (default ``/opt/cni/bin``) and a conflist (default
``/etc/cni/net.d/10-calico.conflist``) rendered from Calico's canonical one: ``calico`` (etcd
datastore, ``calico-ipam``) then ``portmap`` (``snat``, capability ``portMappings``) and
``bandwidth`` (capability ``bandwidth``).  A template can be given instead, as Calico's
``CNI_NETWORK_CONFIG``, with Calico's placeholders (``__KUBERNETES_NODE_NAME__``,
``__CNI_MTU__``, ``__ETCD_ENDPOINTS__``, ``__ETCD_KEY_FILE__``, ``__ETCD_CERT_FILE__``,
``__ETCD_CA_CERT_FILE__``, ``__LOG_LEVEL__``, ``__DATASTORE_TYPE__``,
``__KUBECONFIG_FILEPATH__``).  ``--with-reference-plugins`` also copies ``portmap``,
``bandwidth``, ``tuning``, ``host-local`` and ``loopback`` from /usr/lib/cni, as Calico ships
them.

The executables are small scripts with pycalico's entry points.  They start on
``client_python`` (the system's python3 of this minor version when there is one: it starts
faster) and forward to the node agent; work they must do in-process re-executes on this Python,
which has pycalico's dependencies.  A node's agent socket (``--agent-socket``) is written into
them, because runtimes call plugins with their own environment, and several nodes on one
machine each need their own socket.

Run: ``python -m pycalico.cni.install [--bin-dir DIR] [--conf-dir DIR] ...``.  Invariants: every
file is written to a temporary name and renamed, so a runtime never reads half a file; the
rendered conflist is valid JSON or nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CONF_NAME = "10-calico.conflist"
REFERENCE_DIR = "/usr/lib/cni"
REFERENCE_PLUGINS = ("portmap", "bandwidth", "tuning", "host-local", "loopback")
SOCKET_ENV = "CALICO_AGENT_SOCKET"
ENTRY_POINTS = {"calico": "pycalico.cni.plugin", "calico-ipam": "pycalico.cni.ipam_plugin"}


@dataclass(frozen=True, slots=True)
class InstallOptions:
    bin_dir: str = DEFAULT_BIN_DIR
    conf_dir: str = DEFAULT_CONF_DIR
    conf_name: str = DEFAULT_CONF_NAME
    cni_version: str = "1.0.0"
    network_name: str = "k8s-pod-network"
    nodename: str = ""
    nodename_file: str = ""
    etcd_endpoints: str = "http://127.0.0.1:2379"
    etcd_key_file: str = ""
    etcd_cert_file: str = ""
    etcd_ca_cert_file: str = ""
    mtu: int = 0
    log_level: str = "info"
    log_file_path: str = "/var/log/calico/cni/cni.log"
    ipam_lock_file: str = ""
    kubeconfig: str = ""
    agent_socket: str = ""
    template: str = ""
    with_reference_plugins: bool = False
    python: str = field(default_factory=lambda: sys.executable)
    # The interpreter that starts the executables; "" picks ``client_python(python)``.
    client: str = ""


def placeholders(options: InstallOptions) -> dict[str, str]:
    return {
        "__KUBERNETES_NODE_NAME__": options.nodename,
        "__CNI_MTU__": str(options.mtu),
        "__ETCD_ENDPOINTS__": options.etcd_endpoints,
        "__ETCD_KEY_FILE__": options.etcd_key_file,
        "__ETCD_CERT_FILE__": options.etcd_cert_file,
        "__ETCD_CA_CERT_FILE__": options.etcd_ca_cert_file,
        "__LOG_LEVEL__": options.log_level,
        "__DATASTORE_TYPE__": "etcdv3",
        "__KUBECONFIG_FILEPATH__": options.kubeconfig,
    }


def default_conflist(options: InstallOptions) -> dict[str, Any]:
    calico: dict[str, Any] = {
        "type": "calico",
        "log_level": options.log_level,
        "log_file_path": options.log_file_path,
        "datastore_type": "etcdv3",
        "etcd_endpoints": options.etcd_endpoints,
        "mtu": options.mtu,
        "ipam": {"type": "calico-ipam"},
    }
    for key in ("etcd_key_file", "etcd_cert_file", "etcd_ca_cert_file", "ipam_lock_file"):
        if getattr(options, key):
            calico[key] = getattr(options, key)
    if options.nodename:
        calico["nodename"] = options.nodename
    if options.nodename_file:
        calico["nodename_file"] = options.nodename_file
    if options.kubeconfig:
        calico["policy"] = {"type": "k8s"}
        calico["kubernetes"] = {"kubeconfig": options.kubeconfig}
    return {
        "name": options.network_name,
        "cniVersion": options.cni_version,
        "plugins": [
            calico,
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def render_conflist(options: InstallOptions) -> str:
    """The conflist text; a template's placeholders are replaced, and the result must parse."""
    if not options.template:
        return json.dumps(default_conflist(options), indent=2) + "\n"
    text = options.template
    for placeholder, value in placeholders(options).items():
        text = text.replace(placeholder, value)
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"CNI_NETWORK_CONFIG: the rendered template is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not (parsed.get("plugins") or parsed.get("type")):
        raise ValueError("CNI_NETWORK_CONFIG: expected a conflist (with plugins) or a conf")
    return text if text.endswith("\n") else text + "\n"


def client_python(python: str) -> str:
    """The interpreter the executables start with.  The usual call needs only the standard
    library (``agent_protocol``), so a faster-starting interpreter of the same version may run
    it: the system's ``python3.<minor>`` (Debian's links libpython statically, about 0.7 ms
    less per start than a shared-library build here).  Only when ``python`` is this
    interpreter (its version is known), the candidate is another file, and of the same minor
    version (same bytecode, so the same ``.pyc`` files serve both); else ``python``."""
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return python
    candidate = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", sys.executable)
    if not os.access(candidate, os.X_OK) or os.path.realpath(candidate) == os.path.realpath(base):
        return python
    return candidate


def plugin_script(
    module: str, python: str, agent_socket: str, plugin: str = "", client: str = ""
) -> str:
    """Both plugins start with ``-S`` (no ``site``: about 6 ms less per call).  The usual call
    goes through ``thin_client.forward`` alone (built-in modules only: no ``entry``, no plugin
    module, no ``_json`` shared library) and leaves by ``posix._exit``: interpreter
    finalisation has nothing to do but costs about a millisecond.  Anything else goes to ``module``'s ``main``, which loads ``site`` itself only
    when it must work in-process.  pycalico is found by the path written here."""
    plugin = plugin or next((n for n, m in ENTRY_POINTS.items() if m == module), module)
    client = client or python
    # One argument after the interpreter (Linux passes the rest as one): -I (no PYTHON*
    # variables, no user site) and -S together.
    lines = [f"#!{client} -IS" if client != python else f"#!{python} -S"]
    lines += [
        f'"""CNI plugin installed by pycalico: runs {module}."""',
        "import posix",
        "import sys",
    ]
    if agent_socket:
        # As os.environ.setdefault would: seen by this process and by anything it starts.
        # posix.environ is keyed by bytes.
        name, socket = SOCKET_ENV.encode(), agent_socket.encode()
        lines += [
            f"if {name!r} not in posix.environ:",
            f"    posix.environ[{name!r}] = {socket!r}",
            f"    posix.putenv({name!r}, {socket!r})",
        ]
    lines += [
        f"sys.path.insert(0, {_package_root()!r})",
        *_thin_client_lines(client),
        f"code = forward({plugin.encode()!r})",
        "if code is None:",
        *(
            ["    from pycalico.cni import entry", "", f"    entry.IN_PROCESS_PYTHON = {python!r}"]
            if client != python
            else []
        ),
        f"    from {module} import main",
        "",
        "    code = main()",
        'if "site" not in sys.modules:',
        "    sys.stdout.flush()",
        "    sys.stderr.flush()",
        "    posix._exit(code)",
        "sys.exit(code)",
        "",
    ]
    return "\n".join(lines)


def _thin_client_lines(client: str) -> list[str]:
    """``thin_client`` compiled now and carried in the script as a marshalled code object when
    ``client`` is this interpreter's minor version (``client_python`` guarantees it for the
    default): no package imports, path searches or ``.pyc`` reads at each call (about 0.2 ms of
    a 6 ms process).  A marshal the interpreter cannot read falls back to the import."""
    import marshal

    from pycalico.cni import thin_client

    source_path = thin_client.__file__
    same_minor = client == sys.executable or os.path.basename(client) == (
        f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    if not same_minor:
        return ["from pycalico.cni.thin_client import forward"]
    with open(source_path, encoding="utf-8") as handle:
        code = compile(handle.read(), source_path, "exec", dont_inherit=True, optimize=0)
    blob = marshal.dumps(code)
    return [
        "import marshal",
        "",
        "try:",
        f"    exec(marshal.loads({blob!r}))",
        "except (ValueError, EOFError, TypeError):",
        "    from pycalico.cni.thin_client import forward",
    ]


def _package_root() -> str:
    import pycalico

    return os.path.dirname(os.path.dirname(os.path.abspath(pycalico.__file__)))


def _write(path: str, data: bytes, mode: int) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def install(options: InstallOptions) -> list[str]:
    """Write the executables and the conflist; returns the paths written."""
    conflist = render_conflist(options)  # before any write: a bad template writes nothing
    os.makedirs(options.bin_dir, exist_ok=True)
    os.makedirs(options.conf_dir, exist_ok=True)
    written = []
    for name, module in ENTRY_POINTS.items():
        path = os.path.join(options.bin_dir, name)
        client = options.client or client_python(options.python)
        script = plugin_script(module, options.python, options.agent_socket, name, client)
        _write(path, script.encode(), 0o755)
        written.append(path)
    if options.with_reference_plugins:
        for name in REFERENCE_PLUGINS:
            source = os.path.join(REFERENCE_DIR, name)
            if os.path.exists(source):
                target = os.path.join(options.bin_dir, name)
                shutil.copyfile(source, target + ".tmp")
                os.chmod(target + ".tmp", 0o755)
                os.replace(target + ".tmp", target)
                written.append(target)
    path = os.path.join(options.conf_dir, options.conf_name)
    _write(path, conflist.encode(), 0o644)
    written.append(path)
    return written


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line, every option described; defaults from ``env`` as install-cni's."""
    parser = argparse.ArgumentParser(
        prog="python -m pycalico.cni.install",
        description="Install the calico CNI plugins and a conflist (Calico's install-cni).",
    )
    option = parser.add_argument
    option(
        "--bin-dir",
        default=env.get("CNI_BIN_DIR") or DEFAULT_BIN_DIR,
        help="where calico and calico-ipam are written (env CNI_BIN_DIR; default %(default)s)",
    )
    option(
        "--conf-dir",
        default=env.get("CNI_NET_DIR") or DEFAULT_CONF_DIR,
        help="where the conflist is written (env CNI_NET_DIR; default %(default)s)",
    )
    option(
        "--conf-name",
        default=env.get("CNI_CONF_NAME") or DEFAULT_CONF_NAME,
        help="the conflist's file name (env CNI_CONF_NAME; default %(default)s)",
    )
    option("--cni-version", default="1.0.0", help="the conflist's cniVersion (%(default)s)")
    option("--network-name", default="k8s-pod-network", help="the conflist's name (%(default)s)")
    option(
        "--nodename",
        default=env.get("KUBERNETES_NODE_NAME") or "",
        help="the node name written into the config (env KUBERNETES_NODE_NAME; empty: the "
        "plugin reads the nodename file, else the host name)",
    )
    option("--nodename-file", default="", help="nodename_file (default /var/lib/calico/nodename)")
    option(
        "--etcd-endpoints",
        default=env.get("ETCD_ENDPOINTS") or "http://127.0.0.1:2379",
        help="etcd_endpoints, comma-separated URLs (env ETCD_ENDPOINTS; default %(default)s)",
    )
    option("--etcd-key-file", default=env.get("ETCD_KEY_FILE") or "", help="etcd client key")
    option(
        "--etcd-cert-file", default=env.get("ETCD_CERT_FILE") or "", help="etcd client certificate"
    )
    option("--etcd-ca-cert-file", default=env.get("ETCD_CA_CERT_FILE") or "", help="etcd CA bundle")
    option(
        "--mtu",
        type=int,
        default=int(env.get("CNI_MTU") or 0),
        help="pod interface MTU (env CNI_MTU; 0: the MTU file, else 1500)",
    )
    option("--log-level", default="info", help="the plugin's log_level (%(default)s)")
    option(
        "--log-file-path",
        default="/var/log/calico/cni/cni.log",
        help="the plugin's log file (%(default)s)",
    )
    option("--ipam-lock-file", default="", help="ipam_lock_file (empty: the plugin's default)")
    option("--kubeconfig", default="", help="kubernetes.kubeconfig (kept, not used yet)")
    option(
        "--agent-socket",
        default=env.get("CALICO_AGENT_SOCKET") or "",
        help="the node agent's socket, written into the calico script (env "
        "CALICO_AGENT_SOCKET; empty: /var/run/calico/cni.sock)",
    )
    option(
        "--with-reference-plugins",
        action="store_true",
        help="also copy portmap, bandwidth, tuning, host-local and loopback from /usr/lib/cni",
    )
    return parser


def options_from(argv: Sequence[str], env: Mapping[str, str]) -> InstallOptions:
    arguments = build_parser(env).parse_args(list(argv))
    return InstallOptions(
        **{key: value for key, value in vars(arguments).items()},
        template=env.get("CNI_NETWORK_CONFIG") or "",
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = options_from(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        for path in install(options):
            print(f"installed {path}")
    except (OSError, ValueError) as exc:
        print(f"install-cni: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
