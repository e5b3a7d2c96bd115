#!/usr/bin/python3
"""Checks the Kubernetes manifests in deploy/kubernetes/ against what the agent needs.

Usage: check_manifests.py SOURCE_DIR

Loads every YAML document of the kustomize base (the files its kustomization.yaml lists) and of
components/podmonitor, as they are, without kustomize (PyYAML: Debian's python3-yaml), and
checks their structure: kinds and apiVersions, the DaemonSet's host namespaces, capabilities
(exactly the systemd unit's CapabilityBoundingSet, everything else dropped), nodeSelector,
tolerations, mounts, probes (/healthz and /ready), resources, the Prometheus annotations, that
the Service, ServiceMonitor and PodMonitor select what the DaemonSet runs, and the example web
config. Prints every problem found and exits 1 if there is any; no cluster is needed.

check_kustomize.py imports the checks and applies them to every overlay rendered by kustomize.
"""

import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    print("check_manifests: PyYAML is missing: run scripts/install-deps.sh (Debian package "
          "python3-yaml), and run this with /usr/bin/python3", file=sys.stderr)
    sys.exit(1)

PORT = 10130
NAMESPACE = "portlens"

# The agent's web config, where overlays/tls mounts the Secret portlens-web-config.
WEB_CONFIG_DIR = "/etc/portlens/web"
WEB_CONFIG_FLAG = f"--web.config.file={WEB_CONFIG_DIR}/web-config.yml"
# The image is amd64 only (deploy/docker/Dockerfile installs the amd64 .deb).
NODE_SELECTOR = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def load_all(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    check(docs, f"{path}: no YAML documents")
    return docs


def unit_capabilities(unit_path):
    """The unit's CapabilityBoundingSet=, as systemd reads it, without the CAP_ prefix."""
    caps = set()
    for line in Path(unit_path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line.startswith("CapabilityBoundingSet="):
            continue
        value = line.split("=", 1)[1].strip()
        if not value:
            caps.clear()
            continue
        check(not value.startswith("~"), f"{unit_path}: inverted CapabilityBoundingSet=~ list")
        for cap in value.split():
            check(cap.startswith("CAP_"), f"{unit_path}: odd capability name {cap}")
            caps.add(cap[len("CAP_"):])
    return caps


def memory_bytes(quantity):
    """A Kubernetes memory quantity (64Mi, 512M, 1Gi, 1000) in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    if not m:
        raise ValueError(f"not a memory quantity: {quantity}")
    scale = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return float(m.group(1)) * scale


def by_kind(docs):
    out = {}
    for d in docs:
        check(isinstance(d, dict) and "kind" in d and "apiVersion" in d,
              f"a document without kind/apiVersion: {str(d)[:80]}")
        out.setdefault(d.get("kind"), []).append(d)
    return out


def one(kinds, kind, api_version, where):
    docs = kinds.get(kind, [])
    if not check(len(docs) == 1, f"{where}: expected one {kind}, found {len(docs)}"):
        return {}
    doc = docs[0]
    check(doc.get("apiVersion") == api_version,
          f"{kind}: apiVersion {doc.get('apiVersion')}, expected {api_version}")
    meta = doc.get("metadata", {})
    check(meta.get("name") == "portlens", f"{kind}: metadata.name should be portlens")
    if kind != "Namespace":
        check(meta.get("namespace") == NAMESPACE, f"{kind}: not in namespace {NAMESPACE}")
    return doc


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def resolve_port(port, container):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def check_daemonset(ds, unit_caps, service_account, tls=False):
    """tls: the agent serves HTTPS (overlays/tls): --web.config.file and HTTPS probes."""
    spec = ds.get("spec", {})
    template = spec.get("template", {})
    pod_labels = template.get("metadata", {}).get("labels", {})
    check(selects(spec.get("selector", {}).get("matchLabels"), pod_labels),
          "DaemonSet: selector.matchLabels does not match the pod template's labels")

    strategy = spec.get("updateStrategy", {})
    check(strategy.get("type") == "RollingUpdate", "DaemonSet: updateStrategy is not RollingUpdate")
    check("maxUnavailable" in strategy.get("rollingUpdate", {}),
          "DaemonSet: rollingUpdate.maxUnavailable is not set")

    annotations = template.get("metadata", {}).get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true",
          'pod annotation prometheus.io/scrape should be "true"')
    check(annotations.get("prometheus.io/port") == str(PORT),
          f'pod annotation prometheus.io/port should be "{PORT}"')
    check(annotations.get("prometheus.io/path") == "/metrics",
          'pod annotation prometheus.io/path should be "/metrics"')

    pod = template.get("spec", {})
    check(pod.get("hostPID") is True,
          "pod: hostPID must be true (every pod's /proc/PID/ns/net and socket owners)")
    check(pod.get("hostNetwork") is True,
          "pod: hostNetwork must be true (the node's own namespace, and :10130 on the node)")
    check(pod.get("priorityClassName") == "system-node-critical",
          "pod: priorityClassName should be system-node-critical")
    check(pod.get("nodeSelector") == NODE_SELECTOR,
          f"pod: nodeSelector should be {NODE_SELECTOR} (the image is Linux amd64 only): "
          f"{pod.get('nodeSelector')}")
    tolerations = pod.get("tolerations", [])
    for effect in ("NoSchedule", "NoExecute"):
        check(any(t.get("operator") == "Exists" and "key" not in t and t.get("effect") == effect
                  and "tolerationSeconds" not in t for t in tolerations),
              f"pod: needs a toleration {{operator: Exists, effect: {effect}}} (no key) to run on "
              "tainted nodes")
    check(not any("effect" not in t and "key" not in t for t in tolerations),
          "pod: a toleration without key and effect tolerates every taint; name the effects")
    check(pod.get("serviceAccountName") == service_account,
          f"pod: serviceAccountName should be {service_account}")
    check(pod.get("automountServiceAccountToken") is False,
          "pod: automountServiceAccountToken should be false (the agent never calls the API)")
    check(pod.get("securityContext", {}).get("privileged") is None,
          "pod: privileged is a container setting")

    containers = pod.get("containers", [])
    if not check(len(containers) == 1, "pod: expected exactly one container"):
        return
    c = containers[0]
    image = c.get("image", "")
    check(bool(re.fullmatch(r"[\w./:-]+:[\w.-]+", image)), f"container: image {image!r} has no tag")
    argv = c.get("command", []) + c.get("args", [])
    check(argv[:1] == ["/usr/sbin/portlens"], f"container: command should be /usr/sbin/portlens: {argv}")
    check(argv[1:2] == ["agent"], f"container: the first argument should be agent: {argv}")
    listen = None
    for i, a in enumerate(argv):
        if a == "--web.listen-address" and i + 1 < len(argv):
            listen = argv[i + 1]
        elif a.startswith("--web.listen-address="):
            listen = a.split("=", 1)[1]
    check(listen is None or listen.endswith(f":{PORT}"),
          f"container: --web.listen-address {listen} is not port {PORT}")
    check(any(p.get("containerPort") == PORT for p in c.get("ports", [])),
          f"container: no containerPort {PORT}")

    sc = c.get("securityContext", {})
    check(sc.get("privileged") is False, "container: privileged should be false")
    check(sc.get("readOnlyRootFilesystem") is True, "container: readOnlyRootFilesystem should be true")
    caps = sc.get("capabilities", {})
    added = {a[len("CAP_"):] if a.startswith("CAP_") else a for a in caps.get("add", [])}
    check(added == unit_caps,
          f"container: capabilities.add {sorted(added)} differ from the systemd unit's "
          f"{sorted(unit_caps)}")
    check(caps.get("drop") == ["ALL"], "container: capabilities.drop should be [ALL]")
    check(sc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"),
          "container: seccompProfile should be RuntimeDefault (or a Localhost profile)")

    check(WEB_CONFIG_FLAG in argv if tls else not any("--web.config.file" in a for a in argv),
          f"container: {WEB_CONFIG_FLAG} should be passed {'with' if tls else 'only with'} TLS: "
          f"{argv}")
    # /healthz: 503 when the event loop stalls; /ready: 503 until the bootstrap is merged. The
    # startup probe waits for /ready, so a long bootstrap is not taken for a stall.
    for name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/ready"),
                       ("startupProbe", "/ready")):
        probe = c.get(name, {})
        http = probe.get("httpGet", {})
        check(http.get("path") == path, f"container: {name} should GET {path}: {http.get('path')}")
        check(resolve_port(http.get("port"), c) == PORT, f"container: {name} port is not {PORT}")
        scheme = http.get("scheme", "HTTP")
        check(scheme == ("HTTPS" if tls else "HTTP"),
              f"container: {name} scheme {scheme}, expected {'HTTPS' if tls else 'HTTP'}")

    res = c.get("resources", {})
    requests, limits = res.get("requests", {}), res.get("limits", {})
    check("cpu" in requests and "memory" in requests,
          "container: resources.requests needs cpu and memory")
    check("memory" in limits, "container: resources.limits needs memory")
    if "memory" in requests and "memory" in limits:
        # Measured: ~25 MiB resident idle + 12 MiB of BPF maps; ~175 MiB at 200,000 TIME_WAIT.
        check(memory_bytes(requests["memory"]) >= 40 * 2**20,
              "container: memory request below the measured idle footprint (~40 MiB)")
        check(memory_bytes(limits["memory"]) >= 256 * 2**20,
              "container: memory limit below what 200,000 TIME_WAIT sockets take (~175 MiB)")
        check(memory_bytes(limits["memory"]) >= memory_bytes(requests["memory"]),
              "container: memory limit below the request")
    check("cpu" not in limits, "container: a CPU limit throttles the agent into losing events")

    volumes = {v.get("name"): v for v in pod.get("volumes", [])}
    mounts = {m.get("mountPath"): m for m in c.get("volumeMounts", [])}
    for m in mounts.values():
        check(m.get("name") in volumes, f"container: mount {m.get('mountPath')} has no volume")
    for path in ("/sys/kernel/tracing", "/sys/kernel/btf", "/run/netns"):
        m = mounts.get(path)
        if not check(m is not None, f"container: {path} is not mounted"):
            continue
        check(m.get("readOnly") is True, f"container: {path} should be mounted read-only")
        host = volumes.get(m.get("name"), {}).get("hostPath", {})
        check(host.get("path") == path, f"volume for {path} should be hostPath {path}")
    netns = mounts.get("/run/netns", {})
    check(netns.get("mountPropagation") == "HostToContainer",
          "container: /run/netns needs mountPropagation HostToContainer (namespaces made later)")
    run = mounts.get("/run/portlens")
    if check(run is not None, "container: /run/portlens (the API socket) is not mounted"):
        check("emptyDir" in volumes.get(run.get("name"), {}), "/run/portlens should be an emptyDir")
    check("/proc" not in mounts, "container: /proc comes from hostPID; do not mount the host's")
    web = mounts.get(WEB_CONFIG_DIR)
    if tls and check(web is not None, f"container: {WEB_CONFIG_DIR} (the web config) is not mounted"):
        check(web.get("readOnly") is True, f"container: {WEB_CONFIG_DIR} should be read-only")
        secret = volumes.get(web.get("name"), {}).get("secret", {})
        check(secret.get("secretName") == "portlens-web-config",
              f"{WEB_CONFIG_DIR} should be the Secret portlens-web-config: {secret}")
    if not tls:
        check(web is None, f"container: {WEB_CONFIG_DIR} is mounted without TLS")


def check_servicemonitor(kinds, ds, scheme="http"):
    pod_labels = ds.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    svc = one(kinds, "Service", "v1", "the Service")
    sm = one(kinds, "ServiceMonitor", "monitoring.coreos.com/v1", "the ServiceMonitor")
    spec = svc.get("spec", {})
    check(spec.get("clusterIP") == "None", "Service: should be headless (clusterIP: None)")
    check(selects(spec.get("selector"), pod_labels), "Service: selector does not match the pods")
    ports = {p.get("name"): p for p in spec.get("ports", [])}
    check(ports.get("metrics", {}).get("port") == PORT, f"Service: port metrics should be {PORT}")
    sm_spec = sm.get("spec", {})
    check(selects(sm_spec.get("selector", {}).get("matchLabels"),
                  svc.get("metadata", {}).get("labels", {})),
          "ServiceMonitor: selector does not match the Service's labels")
    check(NAMESPACE in sm_spec.get("namespaceSelector", {}).get("matchNames", []),
          f"ServiceMonitor: namespaceSelector should name {NAMESPACE}")
    endpoints = sm_spec.get("endpoints", [])
    check(len(endpoints) == 1, "ServiceMonitor: expected one endpoint")
    for e in endpoints:
        check(e.get("port") in ports, f"ServiceMonitor: endpoint port {e.get('port')} is not a "
              "port name of the Service")
        check(e.get("path") == "/metrics", "ServiceMonitor: endpoint path should be /metrics")
        check(e.get("scheme", "http") == scheme,
              f"ServiceMonitor: endpoint scheme {e.get('scheme')}, expected {scheme}")
        check(scheme == "http" or "tlsConfig" in e, "ServiceMonitor: https without tlsConfig")


def check_podmonitor(kinds, ds, scheme="http"):
    pod_labels = ds.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    pm = one(kinds, "PodMonitor", "monitoring.coreos.com/v1", "the PodMonitor")
    spec = pm.get("spec", {})
    check(selects(spec.get("selector", {}).get("matchLabels"), pod_labels),
          "PodMonitor: selector does not match the pods")
    # The rules select job="portlens": the job label must come from the pods' name label.
    check(pod_labels.get(spec.get("jobLabel")) == "portlens",
          "PodMonitor: jobLabel should name a pod label whose value is portlens (the rules' job)")
    check(NAMESPACE in spec.get("namespaceSelector", {}).get("matchNames", []),
          f"PodMonitor: namespaceSelector should name {NAMESPACE}")
    container = ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
    port_names = {p.get("name") for p in container.get("ports", [])}
    endpoints = spec.get("podMetricsEndpoints", [])
    check(len(endpoints) == 1, "PodMonitor: expected one endpoint")
    for e in endpoints:
        check(e.get("port") in port_names, f"PodMonitor: port {e.get('port')} is not a container "
              "port name")
        check(e.get("path") == "/metrics", "PodMonitor: endpoint path should be /metrics")
        check(e.get("scheme", "http") == scheme,
              f"PodMonitor: endpoint scheme {e.get('scheme')}, expected {scheme}")
        check(scheme == "http" or "tlsConfig" in e, "PodMonitor: https without tlsConfig")


def check_web_config_secret(kinds):
    """The example web config: exporter-toolkit's YAML, TLS with the mounted certificate."""
    secrets = [s for s in kinds.get("Secret", [])
               if s.get("metadata", {}).get("name") == "portlens-web-config"]
    if not check(len(secrets) == 1, "expected one Secret portlens-web-config"):
        return
    secret = secrets[0]
    check(secret.get("metadata", {}).get("namespace") == NAMESPACE,
          f"Secret portlens-web-config: not in namespace {NAMESPACE}")
    text = secret.get("stringData", {}).get("web-config.yml")
    if not check(isinstance(text, str), "Secret portlens-web-config: no stringData web-config.yml"):
        return
    config = yaml.safe_load(text) or {}
    known = {"tls_server_config", "basic_auth_users", "http_server_config"}
    check(set(config) <= known, f"web-config.yml: unknown keys {sorted(set(config) - known)}")
    tls = config.get("tls_server_config", {})
    check(bool(tls.get("cert_file")) and bool(tls.get("key_file")),
          "web-config.yml: tls_server_config needs cert_file and key_file")
    check(config.get("basic_auth_users") is None,
          "web-config.yml: basic auth in the example would turn the kubelet's probes away (401)")


def base_documents(root):
    """Every document of the base, from the files its kustomization.yaml lists, as they are."""
    base = root / "deploy/kubernetes/base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8"))
    docs = []
    for resource in kustomization.get("resources", []):
        docs += load_all(base / resource)
    return docs


def check_base_objects(kinds, unit_caps, tls=False):
    """The objects every rendering has: namespace, service account, DaemonSet, web config."""
    ns = one(kinds, "Namespace", "v1", "the Namespace")
    check(ns.get("metadata", {}).get("labels", {}).get("pod-security.kubernetes.io/enforce")
          == "privileged", "Namespace: Pod Security must allow host namespaces (privileged)")
    sa = one(kinds, "ServiceAccount", "v1", "the ServiceAccount")
    check(sa.get("automountServiceAccountToken") is False,
          "ServiceAccount: automountServiceAccountToken should be false")
    ds = one(kinds, "DaemonSet", "apps/v1", "the DaemonSet")
    check_daemonset(ds, unit_caps, sa.get("metadata", {}).get("name"), tls=tls)
    check_web_config_secret(kinds)
    for kind, api in (("PrometheusRule", "monitoring.coreos.com/v1"), ("ConfigMap", "v1")):
        for doc in kinds.get(kind, []):
            check(doc.get("apiVersion") == api, f"{kind}: apiVersion should be {api}")
            check(doc.get("metadata", {}).get("namespace") == NAMESPACE,
                  f"{kind}: not in namespace {NAMESPACE}")
    for cm in kinds.get("ConfigMap", []):
        check(cm.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1",
              'ConfigMap: label grafana_dashboard should be "1" (Grafana\'s dashboard sidecar)')


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(sys.argv[1])
    unit_caps = unit_capabilities(root / "deploy/systemd/portlens.service")
    check(unit_caps, "the systemd unit sets no CapabilityBoundingSet=")

    kinds = by_kind(base_documents(root))
    expected = {"Namespace", "ServiceAccount", "DaemonSet", "Service", "ServiceMonitor",
                "PrometheusRule", "ConfigMap", "Secret"}
    check(set(kinds) == expected,
          f"base: kinds {sorted(map(str, kinds))}, expected {sorted(expected)}")
    check_base_objects(kinds, unit_caps)
    ds = one(kinds, "DaemonSet", "apps/v1", "base")
    check_servicemonitor(kinds, ds)

    component = root / "deploy/kubernetes/components/podmonitor/podmonitor.yaml"
    check_podmonitor(by_kind(load_all(component)), ds)

    for p in problems:
        print(f"check_manifests: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_manifests: ok (capabilities {sorted(unit_caps)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
