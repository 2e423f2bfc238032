"""deploy/k8s and deploy/Dockerfile checked offline: yamllint, `kubectl kustomize`
renders them, and what can drift from the server does not (ports, probe targets, the
drain, the HPA's metrics, the routing header)."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from deploy_util import DEPLOY, load_yaml
from server_process import ROOT

K8S = os.path.join(DEPLOY, "k8s")


def k8s_objects() -> dict:
    """{kind: object} of the resources kustomization.yaml lists (one object per kind)."""
    kustomization = load_yaml("k8s/kustomization.yaml")[0]
    objects = {}
    for resource in kustomization["resources"]:
        for obj in load_yaml(os.path.join("k8s", resource)):
            assert obj["kind"] not in objects, f"two {obj['kind']} objects"
            objects[obj["kind"]] = obj
    return objects


def server_container(objects: dict) -> dict:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def effective_flag(container: dict, flag: str, defaults: dict):
    """The value the container runs --flag with: its args, else the server's default."""
    for arg in container.get("args", []):
        if arg.startswith(f"--{flag}="):
            value = arg.split("=", 1)[1]
            return int(value) if re.fullmatch(r"-?\d+", value) else value
    return defaults[flag]


def container_port(container: dict, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert name in ports, f"container port named {name!r} missing; ports: {ports}"
    return ports[name]


def test_yamllint_strict():
    yamllint = shutil.which("yamllint")
    if yamllint is None:
        pytest.fail("yamllint is missing: tools/install_deps.sh installs it")
    result = subprocess.run([yamllint, "-s", "-c", os.path.join(DEPLOY, ".yamllint"), DEPLOY],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomize_renders_every_resource():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (no Debian 12 package ships it; install it from "
                    "Kubernetes' own apt repository to run this check)")
    result = subprocess.run([kubectl, "kustomize", K8S], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(doc["kind"] for doc in rendered) == sorted(k8s_objects())
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fsrst-serve", doc
    (deployment,) = [doc for doc in rendered if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "fsrst-serve:cuda"


def test_ports_and_probes_match_the_server_flags(server_flag_defaults):
    objects = k8s_objects()
    container = server_container(objects)
    grpc_port = effective_flag(container, "port", server_flag_defaults)
    metrics_port = effective_flag(container, "metrics_port", server_flag_defaults)
    assert container_port(container, "grpc") == grpc_port
    assert container_port(container, "metrics") == metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container, f"{probe} missing"
        # grpc.health.v1 for the whole server (service ""), on the gRPC port
        assert container[probe]["grpc"]["port"] == grpc_port, probe
        assert container[probe]["grpc"].get("service", "") == "", probe

    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= pod_labels.items()
    service_ports = {p["name"]: p for p in service["ports"]}
    for name in ("grpc", "metrics"):
        assert service_ports[name]["targetPort"] == name
    monitor = objects["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    for endpoint in monitor["podMetricsEndpoints"]:
        container_port(container, endpoint["port"])


def test_grace_period_covers_pre_stop_and_drain(server_flag_defaults):
    objects = k8s_objects()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = server_container(objects)
    drain_s = effective_flag(container, "drain_timeout_s", server_flag_defaults)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
    pre_stop_s = 0
    if pre_stop:
        assert pre_stop["command"][0] == "sleep", pre_stop
        pre_stop_s = int(pre_stop["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + drain_s, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} < preStop "
        f"{pre_stop_s} s + --drain_timeout_s {drain_s}")


def adapter_rules() -> list:
    (config_map,) = load_yaml("k8s/prometheus-adapter-config.yaml")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_hpa_metrics_come_from_what_the_server_exports(exported_metric_families):
    objects = k8s_objects()
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    # custom metric name -> the server's series it is computed from, by the adapter's rules
    served = {}
    for rule in adapter_rules():
        series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
        name = re.sub(rule["name"]["matches"],
                      rule["name"]["as"].replace("${", "\\g<").replace("}", ">"), series)
        served[name] = series
    hpa_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert hpa_metrics, "the HPA has no metrics"
    for metric in hpa_metrics:
        assert metric in served, f"no prometheus-adapter rule makes {metric}; it makes {served}"
        assert served[metric] in exported_metric_families, (
            f"{metric} comes from {served[metric]}, which fsrst_server does not export")


def test_ingress_hashes_the_header_both_clients_send():
    from fsrst_client.client import IDENTITY_METADATA_KEY
    with open(os.path.join(ROOT, "clients", "cpp", "fsrst_client.h")) as f:
        assert f'kIdentityMetadataKey[] = "{IDENTITY_METADATA_KEY}"' in f.read()
    ingress = k8s_objects()["Ingress"]
    annotations = ingress["metadata"]["annotations"]
    header_variable = "$http_" + IDENTITY_METADATA_KEY.replace("-", "_")
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == header_variable
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == k8s_objects()["Service"]["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in k8s_objects()["Service"]["spec"]["ports"]}


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_matches_the_server(dockerfile, server_flag_defaults):
    with open(os.path.join(DEPLOY, dockerfile)) as f:
        text = f.read()
    port, metrics_port = server_flag_defaults["port"], server_flag_defaults["metrics_port"]
    assert re.search(rf"^EXPOSE {port} {metrics_port}$", text, re.MULTILINE)
    assert f'"--server=127.0.0.1:{port}"' in text  # the HEALTHCHECK's target
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    model = re.search(r'^ENTRYPOINT \["fsrst_server", "--model=([^"]+)"\]', text, re.MULTILINE)
    assert model, "ENTRYPOINT must run fsrst_server with a --model"
    copied = re.search(r"^COPY (model/weights/\S+ )+(\S+)$", text, re.MULTILINE)
    assert copied, "the shipped weights are not copied into the image"
    sources = copied.group(0).split()[1:-1]
    for source in sources:
        assert os.path.exists(os.path.join(ROOT, source)), source
    assert model.group(1) == os.path.join(copied.group(2), "fsrst_x4.pt")
