#!/usr/bin/env python3
"""Checks the deployment files against each other and against what group-server needs: the manifests
parse as YAML, the StatefulSet probes /readyz and /healthz on the metrics port, drains within its grace
period, advertises the pod IP, takes the mesh secret from a Secret, seeds itself with the headless
Service's name, and exposes the ports the container's configuration binds. Run by .ci/run."""

import json
import pathlib
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


config = json.loads((root / "container.json").read_text())
docs = [d for d in yaml.safe_load_all((root / "kubernetes" / "group.yaml").read_text()) if d]
by_kind = {}
for doc in docs:
    for key in ("apiVersion", "kind", "metadata"):
        check(key in doc, f"a document lacks {key}")
    by_kind.setdefault(doc.get("kind"), []).append(doc)

services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
check("group-mesh" in services, "the headless Service group-mesh exists")
headless = services.get("group-mesh", {}).get("spec", {})
check(headless.get("clusterIP") == "None", "group-mesh is headless (clusterIP: None)")
check(headless.get("publishNotReadyAddresses") is True, "group-mesh publishes pods before they are ready")

sets = by_kind.get("StatefulSet", [])
check(len(sets) == 1, "one StatefulSet")
spec = sets[0]["spec"] if sets else {}
check(spec.get("serviceName") == "group-mesh", "the StatefulSet's serviceName is group-mesh")
pod = spec.get("template", {}).get("spec", {})
container = (pod.get("containers") or [{}])[0]
drain_s = config["server"]["drainTimeout"] / 1000
check(pod.get("terminationGracePeriodSeconds", 30) > drain_s,
      "terminationGracePeriodSeconds exceeds server.drainTimeout, so SIGTERM can drain")
check(pod.get("securityContext", {}).get("runAsNonRoot") is True, "pods run as non-root")
ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in container.get("ports", [])}
named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
for key, protocols in (("tcp", ["TCP"]), ("udp", ["UDP"]), ("ws", ["TCP"])):
    port = int(config["server"][key].rsplit(":", 1)[1])
    for protocol in protocols:
        check((port, protocol) in ports, f"the container exposes server.{key} ({port}/{protocol})")
mesh_port = int(config["mesh"]["bind"].rsplit(":", 1)[1])
for protocol in ("TCP", "UDP"):
    check((mesh_port, protocol) in ports, f"the container exposes the mesh port {mesh_port}/{protocol}")
metrics_port = int(config["metrics"]["bind"].rsplit(":", 1)[1])
check(named.get("metrics") == metrics_port, "the metrics port is named metrics")
for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
    get = container.get(probe, {}).get("httpGet", {})
    check(get.get("path") == path and get.get("port") == "metrics", f"{probe} is GET {path} on metrics")
env = {e["name"]: e for e in container.get("env", [])}
check(env.get("GROUP_MESH_ADVERTISE", {}).get("value") == f"$(POD_IP):{mesh_port}",
      "GROUP_MESH_ADVERTISE is the pod IP with the mesh port")
check(env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP",
      "POD_IP comes from status.podIP")
check("secretKeyRef" in env.get("GROUP_MESH_SECRET", {}).get("valueFrom", {}),
      "GROUP_MESH_SECRET comes from a Secret")
args = container.get("args", [])
check("--seed" in args and any(a.startswith("group-mesh.") for a in args),
      "the seed is the headless Service's name")

dockerfile = (root.parent / "Dockerfile").read_text()
check("USER 10001" in dockerfile, "the image runs as an unprivileged user")
check("deploy/container.json" in dockerfile, "the image carries deploy/container.json")
for port in (f"{mesh_port}/udp", f"{metrics_port}/tcp"):
    check(port in dockerfile, f"the Dockerfile exposes {port}")

if problems:
    for problem in problems:
        print(f"deploy/check.py: expected: {problem}", file=sys.stderr)
    sys.exit(1)
print(f"deploy/check.py: {len(docs)} manifests and the Dockerfile agree with deploy/container.json")
