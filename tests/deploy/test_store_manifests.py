"""deploy/k8s's shared reference store checked offline: the server's store flags point at the
Redis that deploy/k8s/redis runs and at files of the Secret the pod mounts, and the flags are
ones fsrst_server has."""

import os
import re

from deploy_util import load_yaml


def one(path, kind):
    (obj,) = [o for o in load_yaml(path) if o["kind"] == kind]
    return obj


def server_args():
    deployment = one("k8s/deployment.yaml", "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = dict(a[2:].split("=", 1) for a in container["args"])
    return deployment, container, args


def test_store_url_names_the_redis_service_and_port():
    _, _, args = server_args()
    host, port = re.fullmatch(r"redis://([^:]+):(\d+)", args["reference_store"]).groups()
    service = one("k8s/redis/service.yaml", "Service")
    assert service["metadata"]["name"] == host
    assert [p["port"] for p in service["spec"]["ports"]] == [int(port)]
    statefulset = one("k8s/redis/statefulset.yaml", "StatefulSet")
    assert service["spec"]["selector"] == statefulset["spec"]["template"]["metadata"]["labels"]


def test_key_and_password_files_come_from_the_mounted_secret():
    deployment, container, args = server_args()
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "reference-store"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "reference-store"]
    secret = volume["secret"]["secretName"]
    for flag, item in (("reference_store_key_file", "key"),
                       ("reference_store_password_file", "password")):
        assert args[flag] == os.path.join(mount["mountPath"], item), flag
    # Redis takes its password from the same Secret.
    statefulset = one("k8s/redis/statefulset.yaml", "StatefulSet")
    (redis,) = statefulset["spec"]["template"]["spec"]["containers"]
    refs = [e["valueFrom"]["secretKeyRef"] for e in redis["env"] if "valueFrom" in e]
    assert {"name": secret, "key": "password"} in refs


def test_every_store_flag_exists(server_flag_defaults):
    _, _, args = server_args()
    for flag in args:
        assert flag in server_flag_defaults, f"--{flag} is not a flag of fsrst_server"
