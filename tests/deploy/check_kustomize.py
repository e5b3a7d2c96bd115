#!/usr/bin/python3
"""Renders every kustomize overlay of deploy/kubernetes and checks the result.

Usage: check_kustomize.py SOURCE_DIR

Renders with `kubectl kustomize` (kustomize v4 or later inside kubectl 1.21+; no cluster is
needed): overlays/plain and overlays/tls as they are, and each of them again with
components/podmonitor enabled (in a copy of deploy/kubernetes, on their commented
`components:` line). Each rendering must have the expected kinds, and passes the checks of
check_manifests.py (capabilities equal to the systemd unit's CapabilityBoundingSet,
nodeSelector, tolerations, probes on /healthz and /ready, mounts, ...); the tls overlay must pass
--web.config.file, mount the web config Secret, and probe and scrape over HTTPS. The
PrometheusRule's rules and the dashboard ConfigMap's dashboard must equal the monitoring mixin's
output (dashboards/mixin, evaluated with jsonnet). Prints every problem and exits 1 if any.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import check_manifests as cm
from check_manifests import by_kind, check

try:
    import yaml
except ImportError:  # check_manifests has already said so and exited
    sys.exit(1)

BASE_KINDS = {"Namespace", "ServiceAccount", "DaemonSet", "PrometheusRule", "ConfigMap", "Secret"}
SERVICEMONITOR_KINDS = {"Service", "ServiceMonitor"}


def fail(message):
    print(f"check_kustomize: {message}", file=sys.stderr)
    sys.exit(1)


def kubectl():
    path = shutil.which("kubectl")
    if not path:
        fail("kubectl not found: it renders the kustomize overlays (kubectl 1.21 or later, whose "
             "kustomize is v4+; Debian 12's kubernetes-client 1.20 embeds kustomize v2.0.3, too "
             "old for `resources:` directories, `patches:` and components)")
    out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True,
                         text=True, check=False)
    try:
        version = json.loads(out.stdout).get("kustomizeVersion", "")
    except json.JSONDecodeError:
        version = ""
    m = re.match(r"v(\d+)", version)
    if not m or int(m.group(1)) < 4:
        fail(f"{path}: kustomize {version or 'unknown'} is too old; kubectl 1.21 or later "
             "(kustomize v4+) is needed")
    return path, version


def render(kubectl_path, directory):
    out = subprocess.run([kubectl_path, "kustomize", str(directory)], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        check(False, f"{directory}: kubectl kustomize failed: {out.stderr.strip()}")
        return []
    if out.stderr.strip():
        # Deprecation warnings and the like: the overlays must render cleanly.
        check(False, f"{directory}: kubectl kustomize warned: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def enable_podmonitor(overlay):
    path = overlay / "kustomization.yaml"
    text = path.read_text(encoding="utf-8")
    enabled = text.replace("# components:\n#   - ../../components/podmonitor\n",
                           "components:\n  - ../../components/podmonitor\n")
    if not check(enabled != text, f"{path}: no commented components/podmonitor line to enable"):
        return
    path.write_text(enabled, encoding="utf-8")


def mixin_output(root):
    jsonnet = shutil.which("jsonnet")
    if not jsonnet:
        fail("jsonnet not found: run scripts/install-deps.sh (Debian package jsonnet)")
    mixin = root / "dashboards/mixin"
    code = ('local m = import "mixin.libsonnet"; {rules: m.prometheusAlerts, '
            'dashboards: m.grafanaDashboards}')
    out = subprocess.run([jsonnet, "-J", str(mixin), "-e", code], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        fail(f"jsonnet failed on the mixin: {out.stderr.strip()}")
    return json.loads(out.stdout)


def check_mixin_objects(name, kinds, mixin):
    rules = kinds.get("PrometheusRule", [])
    if check(len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}"):
        check(rules[0].get("spec") == mixin["rules"],
              f"the PrometheusRule's spec differs from the mixin's prometheusAlerts: "
              "run dashboards/mixin/render.sh")
    maps = kinds.get("ConfigMap", [])
    if check(len(maps) == 1, f"expected one ConfigMap, found {len(maps)}"):
        data = maps[0].get("data", {})
        check(set(data) == set(mixin["dashboards"]),
              f"the ConfigMap holds {sorted(data)}, the mixin {sorted(mixin['dashboards'])}")
        for file, dashboard in mixin["dashboards"].items():
            if file in data:
                check(json.loads(data[file]) == dashboard,
                      f"the ConfigMap's {file} differs from the mixin's dashboard: run "
                      "dashboards/mixin/render.sh")


def check_rendering(kubectl_path, name, directory, unit_caps, mixin, tls, podmonitor):
    before = len(cm.problems)
    kinds = by_kind(render(kubectl_path, directory))
    expected = BASE_KINDS | ({"PodMonitor"} if podmonitor else SERVICEMONITOR_KINDS)
    check(set(kinds) == expected,
          f"{name}: kinds {sorted(map(str, kinds))}, expected {sorted(expected)}")
    cm.check_base_objects(kinds, unit_caps, tls=tls)
    ds = kinds.get("DaemonSet", [{}])[0]
    scheme = "https" if tls else "http"
    if podmonitor:
        cm.check_podmonitor(kinds, ds, scheme=scheme)
    else:
        cm.check_servicemonitor(kinds, ds, scheme=scheme)
    annotations = ds.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
    check(annotations.get("prometheus.io/scheme", "http") == scheme,
          f"{name}: pod annotation prometheus.io/scheme should be {scheme}")
    if tls:
        pod = ds.get("spec", {}).get("template", {}).get("spec", {})
        secrets = {v.get("secret", {}).get("secretName") for v in pod.get("volumes", [])}
        check("portlens-tls" in secrets, f"{name}: the certificate Secret portlens-tls is not mounted")
    check_mixin_objects(name, kinds, mixin)
    for p in cm.problems[before:]:
        print(f"check_kustomize: {name}: {p}", file=sys.stderr)
    return len(cm.problems) == before


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(sys.argv[1]).resolve()
    kubectl_path, version = kubectl()
    unit_caps = cm.unit_capabilities(root / "deploy/systemd/portlens.service")
    mixin = mixin_output(root)
    ok = True
    with tempfile.TemporaryDirectory(prefix="portlens-kustomize-") as tmp:
        copy = Path(tmp) / "kubernetes"
        shutil.copytree(root / "deploy/kubernetes", copy)
        for overlay in ("plain", "tls"):
            tls = overlay == "tls"
            ok &= check_rendering(kubectl_path, f"overlays/{overlay}",
                                  root / "deploy/kubernetes/overlays" / overlay,
                                  unit_caps, mixin, tls=tls, podmonitor=False)
            enable_podmonitor(copy / "overlays" / overlay)
            ok &= check_rendering(kubectl_path, f"overlays/{overlay} + components/podmonitor",
                                  copy / "overlays" / overlay,
                                  unit_caps, mixin, tls=tls, podmonitor=True)
    if not ok:
        return 1
    print(f"check_kustomize: ok: overlays plain and tls, each with and without "
          f"components/podmonitor (kustomize {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
