"""exporters/kubernetes/*.yaml and exporters/prometheus.yml: valid, and agreeing with each other.

The DaemonSet serves HTTPS with basic auth; its Service and PodMonitor, and prometheus.yml's jobs,
must scrape it that way (port, scheme, certificate name, secrets, labels). The Secrets are made by
the commands in the manifest's header, never stored: those commands are run here (all but
kubectl) and what they make is served by a real exporter server and scraped as Prometheus would.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.registry import CollectorRegistry

from zctrace.exporter.server import MetricsServer, TlsFiles, read_basic_auth

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((REPO / "exporters" / "kubernetes").glob("*.yaml"))
DAEMONSET = REPO / "exporters" / "kubernetes" / "daemonset.yaml"
PROMETHEUS = REPO / "exporters" / "prometheus.yml"


def docs() -> dict[str, dict]:
    out = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[doc["kind"]] = doc
    return out


def arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def header_commands() -> list[str]:
    """The commands in the DaemonSet file's header comment (continuation lines joined)."""
    lines, out = [], []
    for line in DAEMONSET.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    text = "\n".join(lines).replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("   ") and line.strip():
            out.append(line.strip())
    return out


def kubernetes_job() -> dict:
    """prometheus.yml's commented-out Kubernetes job, uncommented."""
    text = PROMETHEUS.read_text()
    block = text[text.index("  # - job_name: zctrace-kubernetes"):]
    return yaml.safe_load("\n".join(l.replace("  # ", "  ", 1) for l in block.splitlines()))[0]


def test_manifests_validate_against_the_kubernetes_schemas():
    """kubernetes-validate (schemas shipped in the package, nothing downloaded) in strict mode;
    the PodMonitor (a CRD it has no schema for) is checked field by field below."""
    tool = shutil.which("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate is not installed (scripts/setup.sh installs it)")
    r = subprocess.run([tool, "--strict", *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    passed = re.findall(r"passed for resource (\w+)/", out)
    assert {"daemonset", "service"} <= set(passed), out
    unchecked = re.findall(r"Couldn't find schema for kind (\w+)", out)
    assert unchecked == ["PodMonitor"], out


def test_no_secret_values_in_the_manifests():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc and doc["kind"] != "Secret", f"{path.name}: a Secret with its values in the repository"


def test_daemonset_service_podmonitor_and_prometheus_agree():
    d = docs()
    ds, svc, pm = d["DaemonSet"], d["Service"], d["PodMonitor"]
    pod = ds["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    listen = arg(args, "--listen")
    assert listen.rsplit(":", 1)[1] == str(port["containerPort"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}

    def secret_of(path: str) -> tuple[str, str, int | None]:
        """(secret name, key, defaultMode) of the file `path` the container reads."""
        folder, key = path.rsplit("/", 1)
        volume = volumes[mounts[folder]]["secret"]
        return volume["secretName"], key, volume.get("defaultMode")

    cert, key, users = arg(args, "--tls-cert"), arg(args, "--tls-key"), arg(args, "--basic-auth-file")
    tls = cert is not None
    assert tls == (key is not None) == (users is not None), "TLS and basic auth: both or neither"
    assert tls, "the DaemonSet listens on every node address: it serves HTTPS with basic auth"
    (tls_secret, cert_key, _), (tls_secret2, key_key, _) = secret_of(cert), secret_of(key)
    assert tls_secret == tls_secret2 and (cert_key, key_key) == ("tls.crt", "tls.key")  # kubectl create secret tls
    auth_secret, users_key, mode = secret_of(users)
    assert mode is not None and mode & 0o077 == 0, "the exporter refuses a users file group or others may read"

    # The Service selects the pods and names the port.
    assert svc["metadata"]["namespace"] == ds["metadata"]["namespace"] == pm["metadata"]["namespace"]
    assert svc["spec"]["selector"].items() <= labels.items()
    (sport,) = svc["spec"]["ports"]
    assert sport["port"] == port["containerPort"] and sport["targetPort"] == port["name"]

    # The PodMonitor scrapes those pods on that port over HTTPS with basic auth, as job="zctrace".
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pm["spec"]["namespaceSelector"]["matchNames"] == [ds["metadata"]["namespace"]]
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert set(ep) <= {"port", "path", "scheme", "tlsConfig", "basicAuth", "relabelings", "interval"}
    assert ep["port"] == port["name"] and ep["path"] == "/metrics" and ep["scheme"] == "https"
    scrape_secret = ep["basicAuth"]["username"]["name"]
    assert ep["basicAuth"]["password"] == {"name": scrape_secret, "key": "password"}
    assert ep["basicAuth"]["username"]["key"] == "username"
    assert ep["tlsConfig"]["ca"]["secret"] == {"name": scrape_secret, "key": "ca.crt"}
    server_name = ep["tlsConfig"]["serverName"]
    assert server_name == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    assert {"targetLabel": "job", "replacement": "zctrace"} in ep["relabelings"]

    # prometheus.yml: every job https with basic auth; the Kubernetes one as the PodMonitor.
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = config["scrape_configs"] + [kubernetes_job()]
    for job in jobs:
        assert job["scheme"] == "https" and "ca_file" in job["tls_config"], job["job_name"]
        assert job["basic_auth"]["username"] == "prometheus" and "password_file" in job["basic_auth"], job["job_name"]
    k8s = jobs[-1]
    assert k8s["tls_config"]["server_name"] == server_name
    keep = [r for r in k8s["relabel_configs"] if r.get("action") == "keep"]
    assert {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
            "regex": labels["app.kubernetes.io/name"], "action": "keep"} in keep
    assert {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port["name"],
            "action": "keep"} in keep
    assert {"target_label": "job", "replacement": "zctrace"} in k8s["relabel_configs"]
    assert k8s["kubernetes_sd_configs"][0]["namespaces"]["names"] == [ds["metadata"]["namespace"]]

    # The header's commands make exactly these secrets, with these keys.
    commands = " ".join(header_commands())
    assert f"create secret tls {tls_secret} " in commands
    assert f"create secret generic {auth_secret} --from-file={users_key}" in commands
    assert f"create secret generic {scrape_secret} --from-literal=username=prometheus" in commands
    assert "--from-file=password" in commands and "--from-file=ca.crt=tls.crt" in commands
    assert f"DNS:{server_name}" in commands


def test_promtool_accepts_the_kubernetes_job(tmp_path):
    """Debian's promtool has no kubernetes_sd_configs: the job is checked with static targets in
    their place (everything else as written)."""
    job = kubernetes_job()
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["node-a.example:9435"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    r = subprocess.run(["promtool", "check", "config", "--syntax-only", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_documented_secret_commands_make_files_an_exporter_serves_with(tmp_path):
    """The header's openssl/printf/cut lines, run as written (kubectl and rm left out): the
    exporter's server takes tls.crt/tls.key and `users` (at the Secret volume's mode 0400), and a
    client that trusts ca.crt=tls.crt, checks the name the PodMonitor names and sends `password`
    gets the metrics; a wrong password gets 401."""
    script = [c for c in header_commands() if not c.startswith(("kubectl", "rm "))]
    assert len(script) == 3, script
    subprocess.run(["sh", "-ec", "\n".join(script)], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    (tmp_path / "users").chmod(0o400)
    users = read_basic_auth(str(tmp_path / "users"))
    password = (tmp_path / "password").read_text()
    assert users == {"prometheus": password} and re.fullmatch(r"[0-9a-f]{32}", password)
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0,
                           TlsFiles(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")), users)
    server.start()
    try:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
        server_name = docs()["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["tlsConfig"]["serverName"]
        for pw, want in ((password, "200 OK"), ("wrong", "401 Unauthorized")):
            token = base64.b64encode(f"prometheus:{pw}".encode()).decode()
            with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname=server_name) as s:
                s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {server_name}\r\nAuthorization: Basic {token}\r\n"
                          f"Connection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            assert data.startswith(f"HTTP/1.1 {want}".encode()), data[:200]
        # A client checking another name refuses the certificate.
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(raw, server_hostname="other.monitoring.svc")
    finally:
        server.stop()


def test_daemonset_args_parse_and_read_the_nodes_cgroups():
    """The container's args are zctrace's own (the real parser takes them), and --cgroup-mount
    names a mount of the node's /sys/fs/cgroup: in its own cgroup namespace the container would
    see only itself, and every series would lose its workload labels."""
    from zctrace.cli import build_parser
    pod = docs()["DaemonSet"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = build_parser("export").parse_args(container["args"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert args.cgroup_mount in mounts, "--cgroup-mount is not a volume mount"
    assert volumes[mounts[args.cgroup_mount]]["hostPath"]["path"] == "/sys/fs/cgroup"
    assert {"cgroup", "container_id", "pod_uid"} <= set(args.labels)
