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

import math
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.errors import ConfigError

Platform = Literal["cpu", "gpu"]
Dtype = Literal["auto", "float32", "bfloat16", "float16", "half", "float"]
# The KV cache dtypes vLLM 0.32 accepts (--kv-cache-dtype choices) whose size the planner knows.
KvCacheDtype = Literal["auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2"]

# Flags and variables that have a typed key: set those instead, so one fact lives in one place
# and nothing has to parse them back out of extra_args (the planner, the launch plan).
TYPED_FLAGS = {
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--block-size": "block_size",
    "--num-gpu-blocks-override": "num_gpu_blocks_override",
    "--shutdown-timeout": "shutdown_timeout_s",
    "--host": "host",
    "--port": "port",
}
TYPED_ENV = {
    "CUDA_VISIBLE_DEVICES": "devices",
    "VLLM_CPU_KVCACHE_SPACE": "kv_cache_gib",
    "VLLM_CPU_OMP_THREADS_BIND": "cpu_cores",
    "FAST_CPU_SAMPLER": "fast_cpu_sampler",
}

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
    # GPU: the devices the engine runs on (CUDA_VISIBLE_DEVICES), one per tensor-parallel rank.
    devices: list[int] = Field(default_factory=lambda: [0], min_length=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    kv_cache_dtype: KvCacheDtype = "auto"
    block_size: int | None = Field(default=None, gt=0)  # vLLM's default: 16 on CUDA, 128 on CPU
    # vLLM's --num-gpu-blocks-override (CPU too): exactly this many KV blocks, whatever the memory
    # budget (benchmarks that need a small cache); the planner and the startup check count them.
    num_gpu_blocks_override: int | None = Field(default=None, gt=0)
    cpu_cores: str | None = None  # VLLM_CPU_OMP_THREADS_BIND, e.g. "0" or "0-3"
    # CPU: the cpu_sampler vLLM plugin (exact top-k/top-p and repetition penalty without passes
    # over the whole vocabulary); false gives vLLM's own sampler (FAST_CPU_SAMPLER=0).
    fast_cpu_sampler: bool = True
    startup_timeout_s: float = Field(default=600, gt=0)
    # On SIGTERM vLLM lets requests in flight finish for this long (0 = abort them at once).
    shutdown_timeout_s: int = Field(default=10, ge=0)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("extra_args")
    @classmethod
    def _no_typed_flags(cls, value: list[str]) -> list[str]:
        for arg in value:
            key = TYPED_FLAGS.get(arg.split("=", 1)[0])
            if key:
                raise ValueError(f"{arg} has its own key: set {key} instead")
        return value

    @field_validator("env")
    @classmethod
    def _no_typed_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name in TYPED_ENV:
                raise ValueError(f"{name} has its own key: set {TYPED_ENV[name]} instead")
        return value

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
        if self.tensor_parallel_size != 1:
            argv += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.kv_cache_dtype != "auto":
            argv += ["--kv-cache-dtype", self.kv_cache_dtype]
        if self.block_size is not None:
            argv += ["--block-size", str(self.block_size)]
        if self.num_gpu_blocks_override is not None:
            argv += ["--num-gpu-blocks-override", str(self.num_gpu_blocks_override)]
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
        # The gateway health-checks every engine every few seconds: without this each engine
        # logs a line per check, forever. The gateway's own access log covers real requests.
        argv.append("--disable-uvicorn-access-log")
        argv += ["--shutdown-timeout", str(self.shutdown_timeout_s)]
        return argv + list(self.extra_args)

    def to_env(self, platform: Platform) -> dict[str, str]:
        env: dict[str, str] = {}
        if platform == "cpu":
            if self.kv_cache_gib is not None:
                env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_gib)
            if self.cpu_cores is not None:
                env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_cores
            env["FAST_CPU_SAMPLER"] = "1" if self.fast_cpu_sampler else "0"
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.devices))
        return env | dict(self.env)

    def device_label(self, platform: Platform) -> str:
        """What the engine runs on, e.g. "gpu:0", "gpu:0,1" or "cpu:0-3"."""
        if platform == "gpu":
            return "gpu:" + ",".join(map(str, self.devices))
        return f"cpu:{self.cpu_cores}" if self.cpu_cores else "cpu"


class AdmissionSpec(_Strict):
    """Admission control per replica: beyond `max_in_flight` requests wait in a bounded queue;
    a full queue, or a wait longer than `queue_timeout_s`, is answered 429 with Retry-After."""

    max_in_flight: int = Field(default=64, gt=0)
    max_queue: int = Field(default=128, ge=0)
    queue_timeout_s: float = Field(default=30, gt=0)


class RequestLimits(_Strict):
    """What one request may ask of this model; beyond it the gateway answers 400."""

    max_n: int = Field(default=16, gt=0)  # sequences per request: n, best_of, conversations of a batch
    max_top_logprobs: int = Field(default=20, ge=0)  # top_logprobs, logprobs, prompt_logprobs (vLLM's own cap: 20)


class RoutingSpec(_Strict):
    """How requests for one model are spread over its replicas (gateway/policies.py), and where
    the replicas come from (gateway/discovery.py).

    policy      least_loaded: the healthy replica with the fewest requests in flight (default)
                session: sticky per session (the `session_header` header, else the request's
                    OpenAI `user` field) by consistent hashing; no key: least_loaded
                prefix: cache-aware, as in the SGLang model gateway: the replica whose engine
                    most likely holds the prompt's prefix in its cache, unless loads diverge
    discovery   static: the configured URLs are the replicas (default)
                dns: every address each endpoint's host name resolves to is a replica,
                    re-resolved every `resolve_interval_s` (a Kubernetes headless Service)
    """

    policy: Literal["least_loaded", "session", "prefix"] = "least_loaded"
    discovery: Literal["static", "dns"] = "static"
    resolve_interval_s: float = Field(default=5, gt=0)
    # session
    session_header: str = Field(default="X-Session-Id", min_length=1)
    # prefix (SGLang's names and meaning; defaults discussed in the README's "Routing and discovery")
    cache_threshold: float = Field(default=0.5, ge=0, le=1)  # matched share of the prompt to follow the cache
    # The cache gives way to load when the matching replica has more than balance_abs_threshold
    # requests in flight beyond the least loaded one, and more than balance_rel_threshold times its count.
    balance_abs_threshold: int = Field(default=2, ge=0)
    balance_rel_threshold: float = Field(default=1.5, ge=1)
    # The engines' own load (gateway/engine_load.py): a replica whose engine queues requests or
    # has more than balance_kv_threshold of its KV cache in use gives way to one that does not.
    engine_load: bool = True  # read each engine's /metrics every engine_load_interval_s
    engine_load_interval_s: float = Field(default=1, gt=0)
    balance_kv_threshold: float = Field(default=0.9, ge=0, le=1)  # 1: only a queue counts
    max_tree_chars: int = Field(default=4 * 1024 * 1024, gt=0)  # prompt text remembered per replica
    block_chars: int = Field(default=64, gt=0)  # the tree's granularity

    @model_validator(mode="after")
    def _knobs_of_the_chosen_policy(self) -> RoutingSpec:
        owners = {"session_header": "session"} | dict.fromkeys(
            (
                "cache_threshold",
                "balance_abs_threshold",
                "balance_rel_threshold",
                "engine_load",
                "engine_load_interval_s",
                "balance_kv_threshold",
                "max_tree_chars",
                "block_chars",
            ),
            "prefix",
        )
        # A knob the chosen policy ignores is most likely a mistake; one left at its default is
        # not (a dumped config carries every default, and must load again).
        fields = type(self).model_fields
        changed = {k for k in fields if getattr(self, k) != fields[k].default}
        for knob in sorted(changed & owners.keys()):
            if owners[knob] != self.policy:
                raise ValueError(f"{knob} applies to policy {owners[knob]}, not {self.policy}")
        if "resolve_interval_s" in changed and self.discovery != "dns":
            raise ValueError("resolve_interval_s applies to discovery dns")
        return self


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
    limits: RequestLimits = Field(default_factory=RequestLimits)
    routing: RoutingSpec = Field(default_factory=RoutingSpec)

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

    # A SQLite file (relative to the project root unless absolute) or a postgresql:// URL, which
    # several gateway replicas share; the environment variable named by votes_db_env, when set,
    # overrides it (so a password can come from a secret).
    votes_db: str = ".cache/votes.sqlite3"
    votes_db_env: str = "GATEWAY_VOTES_DB"
    anonymous: bool = True  # show models as A/B with sides shuffled until the vote


class GatewaySpec(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    connect_timeout_s: float = Field(default=5, gt=0)
    first_byte_timeout_s: float = Field(default=300, gt=0)  # until the engine's response headers
    request_timeout_s: float = Field(default=1800, gt=0)  # whole request, streaming included
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)  # every route: 413 beyond
    max_header_bytes: int = Field(default=16 * 1024, gt=0)  # request line + headers: 431 beyond
    header_timeout_s: float = Field(default=10, gt=0)  # to complete a request's headers: 408 after
    max_connections: int = Field(default=1024, gt=0)  # open client connections: 503 beyond
    keep_alive_timeout_s: int = Field(default=5, gt=0)  # idle keep-alive connections are closed after
    health_interval_s: float = Field(default=2, gt=0)  # background health checks of every replica
    restart_engines: bool = True  # restart local engines that die or hang, with exponential backoff
    max_restart_backoff_s: float = Field(default=30, gt=0)
    # A ready engine that fails its health checks this long (hung: SIGSTOP, a wedged GPU) is
    # killed and restarted like one that died.
    unhealthy_restart_after_s: float = Field(default=30, gt=0)
    # More than max_restarts restarts of one engine within restart_window_s: it is marked failed
    # and left alone (visible in /engines, /metrics and the log) instead of restarting forever.
    max_restarts: int = Field(default=5, ge=0)
    restart_window_s: float = Field(default=600, gt=0)
    # On SIGTERM / Ctrl-C: /ready turns 503, new requests get 503, requests in flight (streams
    # included) get this long to finish; then the engines are stopped.
    drain_timeout_s: float = Field(default=30, ge=0)
    engine_log_max_bytes: int = Field(default=20 * 2**20, gt=0)  # per engine log file ...
    engine_log_backups: int = Field(default=3, ge=0)  # ... and this many rotated files kept
    # API keys: comma-separated in this environment variable and/or one per line in a file.
    # A gateway on a non-loopback address refuses to start without a key unless
    # allow_unauthenticated is true. Keys are never logged.
    api_keys_env: str = "GATEWAY_API_KEYS"
    api_keys_file: str | None = None
    allow_unauthenticated: bool = False
    access_log: bool = True  # one JSON line per request on stderr (no prompt text)
    log_dir: str = "logs"
    compare: CompareSpec = Field(default_factory=CompareSpec)
    report_dir: str = "results/report"  # `make report` output served at /report/; relative to the project root


class TrafficRetention(_Strict):
    """How long live pairs of one public name are kept (voted ones too: their vote stays in the
    tally, which keeps no text)."""

    max_pairs: int = Field(default=10_000, gt=0)
    max_age_days: float = Field(default=30, gt=0)


class TrafficSpec(_Strict):
    """A public model name over two models: `primary` answers, `candidate` is tried beside it.

    Clients send `model: <name>`; the canary `split` (weights per model, sticky per user) picks
    the model that answers, and a `mirror_fraction` of the requests is also sent to the other
    model in the background and kept as a live pair for review (gateway/traffic.py).
    """

    name: str = Field(min_length=1, max_length=256)
    primary: str = Field(min_length=1)  # a model's served name or alias
    candidate: str = Field(min_length=1)
    mirror_fraction: float = Field(default=0.0, ge=0, le=1)
    split: dict[str, float] | None = None  # weights per model (names or aliases); none: all to primary
    store_prompts: bool = False  # keep prompts and answers of live pairs (else a sha256 and lengths)
    mirror_max_in_flight: int = Field(default=8, gt=0)  # mirror copies at once; beyond: dropped, counted
    retention: TrafficRetention = Field(default_factory=TrafficRetention)


class DeploymentConfig(_Strict):
    platform: Platform
    description: str = ""
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    models: list[ModelSpec] = Field(min_length=1)
    traffic: list[TrafficSpec] = Field(default_factory=list)

    def find_model(self, name: str) -> ModelSpec | None:
        for model in self.models:
            if name in model.names:
                return model
        return None

    def with_port_base(self, base: int) -> DeploymentConfig:
        """The same deployment on other ports, to run beside another: the gateway on `base`,
        the i-th local engine on base + 101 + i (test.yaml's layout: 8010, 8111, 8112)."""
        models = []
        for i, model in enumerate(self.models):
            engine = model.engine.model_copy(update={"port": base + 101 + i}) if model.engine else None
            models.append(model.model_copy(update={"engine": engine}))
        gateway = self.gateway.model_copy(update={"port": base})
        return self.model_copy(update={"gateway": gateway, "models": models})

    def write(self, path: Path) -> Path:
        """Save as YAML that load_config reads back to an equal config (paths are absolute by now)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
        return path


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
    def fail(key: str, message: str) -> NoReturn:
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
        if model.routing.discovery == "dns":
            for j, url in enumerate(model.endpoints):
                if not url.startswith("http://"):
                    # TLS to a pod's address could not verify the certificate against the name.
                    fail(f"{key}.endpoints[{j}]", "discovery dns reaches each address over plain http://")
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
            if len(engine.devices) != engine.tensor_parallel_size:
                fail(
                    f"{ekey}.devices",
                    f"tensor_parallel_size {engine.tensor_parallel_size} needs as many devices, got {engine.devices}",
                )
            if len(set(engine.devices)) != len(engine.devices):
                fail(f"{ekey}.devices", f"{engine.devices} names a device twice")
            # A tensor-parallel engine takes its share of every device it runs on.
            for device in engine.devices:
                gpu_share[device] += engine.gpu_memory_utilization or 0
                if gpu_share[device] > MAX_GPU_UTILIZATION_PER_DEVICE + 1e-9:
                    fail(
                        f"{ekey}.gpu_memory_utilization",
                        f"engines on GPU {device} add up to {gpu_share[device]:.2f}, "
                        f"more than {MAX_GPU_UTILIZATION_PER_DEVICE}",
                    )
        if check_paths:
            for field in ("model", "tokenizer", "chat_template"):
                value = getattr(engine, field)
                if value and value.startswith("/") and not Path(value).exists():
                    hint = " (run `make models` to build the local models)" if field == "model" else ""
                    fail(f"{ekey}.{field}", f"{value} does not exist{hint}")
    check_traffic(config, fail)


def check_traffic(config: DeploymentConfig, fail: Callable[[str, str], NoReturn]) -> None:
    """Public traffic names are new names; their models exist and differ; split keys are those models."""
    model_names = {name for model in config.models for name in model.names}
    seen: set[str] = set()
    for i, traffic in enumerate(config.traffic):
        key = f"traffic[{i}]"
        if traffic.name in model_names:
            fail(f"{key}.name", f"{traffic.name!r} is already a model name or alias")
        if traffic.name in seen:
            fail(f"{key}.name", f"{traffic.name!r} is defined twice")
        seen.add(traffic.name)
        arms: dict[str, str] = {}
        for field in ("primary", "candidate"):
            model = config.find_model(getattr(traffic, field))
            if model is None:
                names = ", ".join(sorted(model_names))
                fail(f"{key}.{field}", f"no model is named {getattr(traffic, field)!r} (names and aliases: {names})")
            arms[field] = model.name
        if arms["primary"] == arms["candidate"]:
            fail(f"{key}.candidate", f"is the same model as primary ({arms['primary']})")
        try:
            resolve_split(traffic.split or {}, arms["primary"], arms["candidate"], config.find_model)
        except ValueError as exc:
            fail(f"{key}.split", str(exc))


def resolve_split(
    split: dict[str, float], primary: str, candidate: str, find: Callable[[str], ModelSpec | None]
) -> dict[str, float]:
    """Canary weights keyed by served name (a model left out weighs 0); ValueError if a key is not
    the primary or the candidate, names one model twice, or the weights do not add up to more than 0."""
    weights: dict[str, float] = {}
    for name, weight in split.items():
        model = find(name)
        if model is None or model.name not in (primary, candidate):
            raise ValueError(f"{name!r}: weights are for the primary or the candidate: {primary} or {candidate}")
        if model.name in weights:
            raise ValueError(f"{name!r}: {model.name} has a weight already (under another of its names)")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{name!r}: a weight is a finite number >= 0, got {weight}")
        weights[model.name] = weight
    if split and sum(weights.values()) <= 0:
        raise ValueError("the weights must add up to more than 0")
    return weights
