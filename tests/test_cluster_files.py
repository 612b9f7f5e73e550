"""Static checks of cluster/: the Ray launcher YAML, the KubeRay manifests, the compose file, the Dockerfile.

Docker and Kubernetes cannot run here, so these files are checked by parsing them and validating the
fields that decide whether a deployment works: against Ray's own launcher schema (shipped in the
installed ray package) and against the ray.io/v1 CRD fields that matter, transcribed from KubeRay's
``ray-operator/apis/ray/v1/{raycluster,rayjob}_types.go`` (KubeRay 1.5+, which added ``authOptions``).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
FFCV_DEBIAN_PACKAGES = ("libopencv-dev", "libturbojpeg0-dev", "pkg-config")


def _load(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


# ------------------------------------------------------------------ Ray cluster launcher YAML
def test_launcher_yaml_valid_against_rays_own_schema() -> None:
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = _load("ray-cluster.aws.yaml")
    jsonschema.validate(config, schema)

    for key in ("cluster_name", "provider", "head_node_type", "available_node_types"):
        assert key in config, key
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    for name, node_type in types.items():
        for key in ("resources", "min_workers", "max_workers", "node_config"):
            assert key in node_type, f"{name}.{key}"
        assert node_type["min_workers"] <= node_type["max_workers"]
    workers = [node_type for name, node_type in types.items() if name != config["head_node_type"]]
    assert any(node_type["resources"].get("GPU", 0) >= 1 and node_type["max_workers"] > node_type["min_workers"]
               for node_type in workers), "an autoscaling GPU worker type"


def test_launcher_yaml_setup_and_start_commands() -> None:
    config = _load("ray-cluster.aws.yaml")
    setup = "\n".join(config["setup_commands"])
    for package in FFCV_DEBIAN_PACKAGES:
        assert re.search(rf"apt-get install[^\n]*\b{re.escape(package)}\b", setup), package
    assert re.search(r"pip install[^\n]*-c constraints\.txt \.", setup)
    assert "3.11" in setup  # requires-python of pyproject.toml

    # The token reaches every node, and every `ray start` runs in token mode with a capped object store.
    assert "~/.ray/auth_token" in config["file_mounts"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [command for command in config[key] if "ray start" in command]
        assert len(starts) == 1, key
        assert "RAY_AUTH_MODE=token" in starts[0], key
        assert re.search(r"--object-store-memory=\d+", starts[0]), key
    assert "--head" in config["head_start_ray_commands"][-1]
    assert "--address=$RAY_HEAD_IP:6379" in config["worker_start_ray_commands"][-1]


# ------------------------------------------------------------------ KubeRay manifests
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_QUANTITIES = {"type": "object", "additionalProperties": {"type": ["string", "integer"]}}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "image", "resources"],
                        "properties": {
                            "name": {"type": "string"},
                            "image": {"type": "string", "minLength": 1},
                            "resources": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"requests": _QUANTITIES, "limits": _QUANTITIES},
                                "required": ["limits"],
                            },
                            "env": {
                                "type": "array",
                                "items": {"type": "object", "required": ["name"],
                                          "oneOf": [{"required": ["value"]}, {"required": ["valueFrom"]}]},
                            },
                        },
                    },
                },
            },
        },
    },
}
_RAY_CLUSTER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["headGroupSpec"],
    "properties": {
        "headGroupSpec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["rayStartParams", "template"],
            "properties": {
                "serviceType": {"type": "string"},
                "headService": {"type": "object"},
                "enableIngress": {"type": "boolean"},
                "rayStartParams": _STRINGS,
                "template": _POD_TEMPLATE,
            },
        },
        "workerGroupSpecs": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
                "properties": {
                    "groupName": {"type": "string"},
                    "replicas": {"type": "integer", "minimum": 0},
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "numOfHosts": {"type": "integer", "minimum": 1},
                    "rayStartParams": _STRINGS,
                    "template": _POD_TEMPLATE,
                    "scaleStrategy": {"type": "object"},
                },
            },
        },
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "resources": {"type": "object"},
                "image": {"type": "string"},
                "imagePullPolicy": {"type": "string"},
                "env": {"type": "array"},
                "envFrom": {"type": "array"},
                "volumeMounts": {"type": "array"},
                "securityContext": {"type": "object"},
                "idleTimeoutSeconds": {"type": "integer"},
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
            },
        },
        "authOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mode": {"enum": ["disabled", "token"]},
                "secretName": {"type": "string"},
                "enableK8sTokenAuth": {"type": "boolean"},
            },
        },
        "headServiceAnnotations": _STRINGS,
        "suspend": {"type": "boolean"},
    },
}
_RAY_CLUSTER = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayCluster"}, "spec": _RAY_CLUSTER_SPEC},
}
_RAY_JOB = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["entrypoint", "rayClusterSpec"],
            "properties": {
                "entrypoint": {"type": "string"},
                "rayClusterSpec": _RAY_CLUSTER_SPEC,
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                "backoffLimit": {"type": "integer", "minimum": 0},
                "runtimeEnvYAML": {"type": "string"},
                "entrypointNumCpus": {"type": "number"},
                "entrypointNumGpus": {"type": "number"},
                "entrypointResources": {"type": "string"},
                "submitterPodTemplate": {"type": "object"},
                "submitterConfig": {"type": "object"},
                "clusterSelector": _STRINGS,
                "metadata": _STRINGS,
                "jobId": {"type": "string"},
                "suspend": {"type": "boolean"},
                "deletionStrategy": {"type": "object"},
                "managedBy": {"type": "string"},
            },
        },
    },
}


def _check_cluster_spec(spec: dict) -> None:
    assert spec["authOptions"]["mode"] == "token"
    assert tuple(int(part) for part in spec["rayVersion"].split(".")) >= (2, 52, 0)  # token auth in KubeRay
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["object-store-memory"].isdigit()
    groups = spec["workerGroupSpecs"]
    assert groups, "at least one worker group"
    for group in groups:
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        assert group["rayStartParams"]["object-store-memory"].isdigit()
    assert any("nvidia.com/gpu" in container["resources"]["limits"]
               for group in groups for container in group["template"]["spec"]["containers"])


def test_kuberay_raycluster_manifest() -> None:
    manifest = _load("kuberay/raycluster.yaml")
    jsonschema.validate(manifest, _RAY_CLUSTER)
    _check_cluster_spec(manifest["spec"])


def test_kuberay_rayjob_runs_nas_launch_with_secrets_from_a_secret() -> None:
    manifest = _load("kuberay/rayjob.yaml")
    jsonschema.validate(manifest, _RAY_JOB)
    spec = manifest["spec"]
    _check_cluster_spec(spec["rayClusterSpec"])

    words = shlex.split(spec["entrypoint"])
    assert words[:2] == ["nas", "launch"]
    option = {words[i]: words[i + 1] for i in range(2, len(words) - 1) if words[i].startswith("--")}
    assert option["--address"] == "auto"
    # The URLs come from environment variables, expanded on the head: nothing secret in the manifest.
    assert option["--storage"] == "$NAS_STORAGE_URL" and option["--tracking-uri"] == "$NAS_TRACKING_URI"
    assert "@" not in spec["entrypoint"] and "postgresql" not in spec["entrypoint"]
    # Expansion must happen on the head, not in a submitter pod that lacks the variables.
    assert spec["submissionMode"] == "HTTPMode"
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in head["env"]}
    assert env["NAS_STORAGE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "nas-secrets", "key": "storage-url"}
    assert env["NAS_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["name"] == "nas-secrets"

    secret = _load("kuberay/secrets.example.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "nas-secrets"
    assert set(secret["stringData"]) == {"storage-url", "tracking-uri"}
    assert secret["stringData"]["storage-url"].startswith("postgresql+psycopg2://")
    pvc = _load("kuberay/shared-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]


# ------------------------------------------------------------------ docker-compose.yml and the Dockerfile
def _command(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_compose_stack() -> None:
    compose = _load("docker-compose.yml")
    services = compose["services"]
    assert {"postgres", "mlflow", "ray-head", "ray-worker"} <= set(services)
    for name in ("postgres", "mlflow", "ray-head", "ray-worker"):
        assert "test" in services[name]["healthcheck"], name

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "POSTGRES_PASSWORD" not in postgres["environment"]  # the password comes from a secret file
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"
    init_sql = (CLUSTER / "postgres-init" / "10-mlflow-database.sql").read_text().lower()
    assert "create database mlflow" in init_sql

    mlflow = services["mlflow"]
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    mlflow_command = _command(mlflow)
    assert "mlflow server" in mlflow_command
    assert re.search(r"--backend-store-uri \"?postgresql\+psycopg2://[^\"]*@postgres:5432/mlflow", mlflow_command)
    assert "--artifacts-destination /mlflow-artifacts" in mlflow_command
    assert any(volume.endswith(":/mlflow-artifacts") for volume in mlflow["volumes"])
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"

    head, worker = services["ray-head"], services["ray-worker"]
    assert "--head" in head["command"] and "--block" in head["command"]
    assert "--address=ray-head:6379" in worker["command"] and "--block" in worker["command"]
    for service in (head, worker):
        assert any(arg.startswith("--object-store-memory=") for arg in service["command"])
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["environment"]["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_token"
        assert "ray_token" in service["secrets"]
        assert "shared:/shared" in service["volumes"]  # the --storage-path every node sees
        assert service["build"]["dockerfile"] == "cluster/Dockerfile"
    assert worker["deploy"]["replicas"] >= 2  # and `--scale ray-worker=N`
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "shared" in compose["volumes"]
    assert {"pg_password", "ray_token"} <= set(compose["secrets"])
    # Published ports on the Docker host's loopback only.
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port
    # No secret values anywhere in the file.
    text = (CLUSTER / "docker-compose.yml").read_text()
    assert not re.search(r"postgresql\+psycopg2://nas:[A-Za-z0-9]", text)


def test_dockerfile() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    logical = [line.strip() for line in text.replace("\\\n", " ").splitlines()
               if line.strip() and not line.strip().startswith("#")]
    assert re.fullmatch(r"FROM python:3\.11-slim-(bookworm|bullseye|trixie)", logical[0])
    apt = " ".join(line for line in logical if "apt-get install" in line)
    for package in FFCV_DEBIAN_PACKAGES:
        assert package in apt.split(), package
    assert any(re.search(r"pip install .*-c constraints\.txt \.", line) for line in logical)
    assert any(line.startswith("USER ") and line != "USER root" for line in logical)


def test_secrets_folder_is_ignored() -> None:
    assert (CLUSTER / "secrets" / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]


@pytest.mark.parametrize("name", sorted(str(path.relative_to(CLUSTER)) for path in CLUSTER.rglob("*.y*ml")))
def test_every_yaml_parses(name: str) -> None:
    assert isinstance(_load(name), dict)


def test_kuberay_schema_catches_typos() -> None:
    manifest = _load("kuberay/raycluster.yaml")
    manifest["spec"]["workerGroupSpec"] = manifest["spec"].pop("workerGroupSpecs")
    with pytest.raises(jsonschema.ValidationError, match="workerGroupSpec"):
        jsonschema.validate(manifest, _RAY_CLUSTER)
    manifest = _load("kuberay/raycluster.yaml")
    del manifest["spec"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        jsonschema.validate(manifest, _RAY_CLUSTER)
