"""Deployment config: one YAML file describes the engines and the gateway in front of them.

Loaded and validated once, at startup, into typed objects::

    config = load_config(Path("engine_config/test.yaml"))
    for model in config.models:
        print(model.name, model.aliases, model.engine.to_argv(model.name) if model.engine else None)

Every problem raises `ConfigError` with the file and the key that is wrong, e.g.
``engine_config/cpu.yaml: models[1].engine.dtype: float16 is not supported on platform cpu``.
`EngineSpec.to_argv` is the one place that knows vLLM's command-line flags.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import ConfigError

Platform = Literal["cpu", "gpu"]
Dtype = Literal["auto", "float32", "bfloat16", "float16", "half", "float"]

# What vLLM's platforms accept (CpuPlatform.supported_dtypes on x86; CUDA takes all).
# Accepted is not the same as correct: bf16 on the CPU backend produced garbage for SmolLM2,
# which is why every local model is checked against a transformers reference in the tests.
PLATFORM_DTYPES: dict[str, frozenset[str]] = {
    "cpu": frozenset({"auto", "float32", "bfloat16", "float16"}),
    "gpu": frozenset({"auto", "float32", "bfloat16", "float16"}),
}
MAX_GPU_UTILIZATION_PER_DEVICE = 0.95


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingDefaults(_Strict):
    """Applied to a request for this model unless the request sets the field itself."""

    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    repetition_penalty: float | None = Field(default=None, gt=0)

    def as_request_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class EngineSpec(_Strict):
    """One local vLLM engine (an OpenAI API server process)."""

    model: str  # a local directory (starts with '.', '/' or '~') or a hub id
    tokenizer: str | None = None
    dtype: Dtype = "auto"
    max_model_len: int = Field(gt=0)
    max_num_seqs: int = Field(default=64, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    kv_cache_gib: int | None = Field(default=None, gt=0)
    enforce_eager: bool = False
    reasoning_parser: str | None = None
    chat_template: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(gt=0, lt=65536)
    device: int = Field(default=0, ge=0)  # GPU index (CUDA_VISIBLE_DEVICES)
    cpu_cores: str | None = None  # VLLM_CPU_OMP_THREADS_BIND, e.g. "0" or "0-3"
    startup_timeout_s: float = Field(default=600, gt=0)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_local_model(self) -> bool:
        return self.model.startswith((".", "/", "~"))

    def to_argv(self, served_name: str, *, python: str = sys.executable) -> list[str]:
        argv = [python, "-m", "vllm.entrypoints.openai.api_server"]
        argv += ["--model", self.model, "--served-model-name", served_name]
        argv += ["--host", self.host, "--port", str(self.port)]
        argv += ["--dtype", self.dtype, "--max-model-len", str(self.max_model_len)]
        argv += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.tokenizer:
            argv += ["--tokenizer", self.tokenizer]
        if self.max_num_batched_tokens:
            argv += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        if self.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.enforce_eager:
            argv.append("--enforce-eager")
        if self.reasoning_parser:
            argv += ["--reasoning-parser", self.reasoning_parser]
        if self.chat_template:
            argv += ["--chat-template", self.chat_template]
        return argv + list(self.extra_args)

    def to_env(self, platform: Platform) -> dict[str, str]:
        env: dict[str, str] = {}
        if platform == "cpu":
            if self.kv_cache_gib is not None:
                env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_gib)
            if self.cpu_cores is not None:
                env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_cores
        else:
            env["CUDA_VISIBLE_DEVICES"] = str(self.device)
        return env | dict(self.env)


class AdmissionSpec(_Strict):
    """Admission control per replica: beyond `max_in_flight` requests wait in a bounded queue;
    a full queue, or a wait longer than `queue_timeout_s`, is answered 429 with Retry-After."""

    max_in_flight: int = Field(default=64, gt=0)
    max_queue: int = Field(default=128, ge=0)
    queue_timeout_s: float = Field(default=30, gt=0)


class ModelSpec(_Strict):
    """A model the gateway serves: its public names, defaults, and where it runs."""

    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    sampling_defaults: SamplingDefaults = Field(default_factory=SamplingDefaults)
    # R1's model card: "avoid adding a system prompt; all instructions should be in the user prompt".
    system_prompt: Literal["keep", "merge_into_user"] = "keep"
    engine: EngineSpec | None = None
    endpoints: list[str] = Field(default_factory=list)  # engines started elsewhere (URLs)
    admission: AdmissionSpec = Field(default_factory=AdmissionSpec)

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must start with http:// or https://")
        return [url.rstrip("/") for url in value]

    @property
    def names(self) -> list[str]:
        return [self.name, *self.aliases]

    @property
    def urls(self) -> list[str]:
        local = [self.engine.url] if self.engine else []
        return local + list(self.endpoints)


class CompareSpec(_Strict):
    """The side-by-side page and API (/v1/compare)."""

    votes_db: str = ".cache/votes.sqlite3"  # relative to the project root unless absolute
    anonymous: bool = True  # show models as A/B with sides shuffled until the vote


class GatewaySpec(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    connect_timeout_s: float = Field(default=5, gt=0)
    first_byte_timeout_s: float = Field(default=300, gt=0)  # until the engine's response headers
    request_timeout_s: float = Field(default=1800, gt=0)  # whole request, streaming included
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    health_interval_s: float = Field(default=2, gt=0)  # background health checks of every replica
    restart_engines: bool = True  # restart local engines that die, with exponential backoff
    max_restart_backoff_s: float = Field(default=30, gt=0)
    # API keys: comma-separated in this environment variable and/or one per line in a file.
    # No key configured means no authentication. Keys are never logged.
    api_keys_env: str = "GATEWAY_API_KEYS"
    api_keys_file: str | None = None
    access_log: bool = True  # one JSON line per request on stderr (no prompt text)
    log_dir: str = "logs"
    compare: CompareSpec = Field(default_factory=CompareSpec)


class DeploymentConfig(_Strict):
    platform: Platform
    description: str = ""
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    models: list[ModelSpec] = Field(min_length=1)

    def find_model(self, name: str) -> ModelSpec | None:
        for model in self.models:
            if name in model.names:
                return model
        return None


def load_config(path: Path, *, check_paths: bool = True) -> DeploymentConfig:
    """Read, validate and resolve a deployment file; raise ConfigError naming file and key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = DeploymentConfig.model_validate(_resolve_paths(raw, path.parent))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    _check_consistency(config, path, check_paths=check_paths)
    return config


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Local model, tokenizer and template paths are relative to the config file."""
    models = raw.get("models")
    if not isinstance(models, list):
        return raw
    for model in models:
        engine = model.get("engine") if isinstance(model, dict) else None
        if not isinstance(engine, dict):
            continue
        for key in ("model", "tokenizer", "chat_template"):
            value = engine.get(key)
            if isinstance(value, str) and value.startswith((".", "~")):
                engine[key] = str((base / Path(value).expanduser()).resolve())
    return raw


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{loc or '(top level)'}: {message}")
    return "; ".join(problems)


def _check_consistency(config: DeploymentConfig, path: Path, *, check_paths: bool) -> None:
    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{path}: {key}: {message}")

    seen_names: dict[str, str] = {}
    # Local engines and the gateway run on one host, so a port may be used once.
    ports: dict[int, str] = {config.gateway.port: "gateway.port"}
    gpu_share: dict[int, float] = defaultdict(float)
    for i, model in enumerate(config.models):
        key = f"models[{i}]"
        for name in model.names:
            if name in seen_names:
                fail(f"{key}.name", f"served name or alias {name!r} also used by {seen_names[name]}")
            seen_names[name] = key
        if model.engine is None and not model.endpoints:
            fail(key, "needs an 'engine' to start or 'endpoints' to reach")
        engine = model.engine
        if engine is None:
            continue
        ekey = f"{key}.engine"
        if engine.port in ports:
            fail(f"{ekey}.port", f"port {engine.port} also used by {ports[engine.port]}")
        ports[engine.port] = f"{ekey}.port"
        if engine.dtype not in PLATFORM_DTYPES[config.platform]:
            fail(f"{ekey}.dtype", f"{engine.dtype} is not supported on platform {config.platform}")
        if config.platform == "cpu" and engine.gpu_memory_utilization is not None:
            fail(f"{ekey}.gpu_memory_utilization", "is a GPU setting; use kv_cache_gib on platform cpu")
        if config.platform == "gpu":
            if engine.kv_cache_gib is not None:
                fail(f"{ekey}.kv_cache_gib", "is a CPU setting; use gpu_memory_utilization on platform gpu")
            if engine.gpu_memory_utilization is None:
                fail(f"{ekey}.gpu_memory_utilization", "is required on platform gpu")
            gpu_share[engine.device] += engine.gpu_memory_utilization or 0
            if gpu_share[engine.device] > MAX_GPU_UTILIZATION_PER_DEVICE + 1e-9:
                fail(
                    f"{ekey}.gpu_memory_utilization",
                    f"engines on GPU {engine.device} add up to {gpu_share[engine.device]:.2f}, "
                    f"more than {MAX_GPU_UTILIZATION_PER_DEVICE}",
                )
        if check_paths:
            for field in ("model", "tokenizer", "chat_template"):
                value = getattr(engine, field)
                if value and value.startswith("/") and not Path(value).exists():
                    hint = " (run `make models` to build the local models)" if field == "model" else ""
                    fail(f"{ekey}.{field}", f"{value} does not exist{hint}")
