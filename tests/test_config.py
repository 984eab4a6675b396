from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import EngineSpec, load_config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def engine(port: int, **extra: Any) -> dict[str, Any]:
    return {"model": "org/some-model", "max_model_len": 2048, "port": port} | extra


def cpu_config(**models_extra: Any) -> dict[str, Any]:
    return {
        "platform": "cpu",
        "models": [
            {"name": "a", "aliases": ["first"], "engine": engine(9001)},
            {"name": "b", "aliases": ["second"], "engine": engine(9002)},
        ],
    } | models_extra


@pytest.mark.parametrize("name", ["cpu.yaml", "test.yaml", "gpu.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    config = load_config(ROOT / "engine_config" / name, check_paths=False)
    assert len(config.models) == 2
    r1 = config.find_model("deepseek-r1")
    assert r1 is not None and r1.engine is not None
    assert r1.engine.reasoning_parser == "deepseek_r1"
    assert r1.sampling_defaults.temperature == 0.6 and r1.sampling_defaults.top_p == 0.95
    assert config.find_model("qwen") is not None


def test_gpu_config_shares_one_device() -> None:
    config = load_config(ROOT / "engine_config" / "gpu.yaml", check_paths=False)
    shares = [m.engine.gpu_memory_utilization for m in config.models if m.engine]
    assert sum(s or 0 for s in shares) <= 0.95
    assert {m.engine.model for m in config.models if m.engine} == {
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "Qwen/Qwen2.5-1.5B-Instruct",
    }


def test_local_paths_resolve_relative_to_the_config_file() -> None:
    config = load_config(ROOT / "engine_config" / "test.yaml", check_paths=False)
    engine_spec = config.models[0].engine
    assert engine_spec is not None
    assert engine_spec.model == str(ROOT / ".cache" / "models" / "r1-tiny")


def test_to_argv_and_env_carry_every_setting() -> None:
    config = load_config(ROOT / "engine_config" / "cpu.yaml", check_paths=False)
    model = config.models[0]
    assert model.engine is not None
    argv = model.engine.to_argv(model.name, python="py")
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("--served-model-name") == "r1-distill-tiny"
    assert flag("--port") == "8101" and flag("--host") == "127.0.0.1"
    assert flag("--dtype") == "float32" and flag("--max-model-len") == "4096"
    assert flag("--reasoning-parser") == "deepseek_r1"
    assert "--enforce-eager" in argv
    assert "--disable-uvicorn-access-log" in argv  # no log line per health check
    assert flag("--shutdown-timeout") == "10"  # vLLM drains its own requests on SIGTERM
    assert "--tensor-parallel-size" not in argv and "--kv-cache-dtype" not in argv and "--block-size" not in argv
    assert model.engine.to_env("cpu") == {
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": "0",
        "FAST_CPU_SAMPLER": "1",
    }


def test_fast_cpu_sampler_switch_reaches_the_engine_environment_on_cpu_only() -> None:
    config = load_config(ROOT / "engine_config" / "cpu.yaml", check_paths=False)
    engine = config.models[0].engine
    assert engine is not None and engine.fast_cpu_sampler  # on by default
    off = engine.model_copy(update={"fast_cpu_sampler": False})
    assert off.to_env("cpu")["FAST_CPU_SAMPLER"] == "0"
    assert "FAST_CPU_SAMPLER" not in off.to_env("gpu")  # the plugin only ever acts on the CPU platform
    assert off.to_argv("m") == engine.to_argv("m")  # an environment switch, not a vLLM flag
    with pytest.raises(ValueError, match="set fast_cpu_sampler instead"):  # one fact, one place
        EngineSpec.model_validate(engine.model_dump() | {"env": {"FAST_CPU_SAMPLER": "0"}})


def test_typed_topology_is_emitted_by_to_argv_and_to_env_only() -> None:
    config = load_config(ROOT / "engine_config" / "gpu-tp2.yaml", check_paths=False)
    spec = config.models[0].engine
    assert spec is not None and spec.tensor_parallel_size == 2 and spec.devices == [0, 1]
    assert spec.extra_args == [] and spec.env == {}  # one fact, one place
    argv = spec.to_argv("m", python="py")
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert spec.to_env("gpu") == {"CUDA_VISIBLE_DEVICES": "0,1"}
    tuned = spec.model_copy(update={"kv_cache_dtype": "fp8", "block_size": 32, "num_gpu_blocks_override": 96})
    argv = tuned.to_argv("m", python="py")
    assert argv[argv.index("--kv-cache-dtype") + 1] == "fp8" and argv[argv.index("--block-size") + 1] == "32"
    assert argv[argv.index("--num-gpu-blocks-override") + 1] == "96"
    assert "--num-gpu-blocks-override" not in spec.to_argv("m", python="py")
    assert spec.device_label("gpu") == "gpu:0,1"


@pytest.mark.parametrize(
    ("engine_extra", "expected"),
    [
        ({"extra_args": ["--tensor-parallel-size", "2"]}, "set tensor_parallel_size instead"),
        ({"extra_args": ["-tp", "2"]}, "set tensor_parallel_size instead"),
        ({"extra_args": ["--kv-cache-dtype=fp8"]}, "set kv_cache_dtype instead"),
        ({"extra_args": ["--num-gpu-blocks-override", "96"]}, "set num_gpu_blocks_override instead"),
        ({"env": {"CUDA_VISIBLE_DEVICES": "0,1"}}, "set devices instead"),
        ({"tensor_parallel_size": 2}, "tensor_parallel_size 2 needs as many devices, got [0]"),
        ({"tensor_parallel_size": 2, "devices": [1, 1]}, "names a device twice"),
    ],
)
def test_topology_lives_in_typed_keys(tmp_path: Path, engine_extra: dict[str, Any], expected: str) -> None:
    data = {"platform": "gpu", "models": [{"name": "a", "engine": engine(9001, gpu_memory_utilization=0.4)}]}
    data["models"][0]["engine"] |= engine_extra  # type: ignore[index]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    assert expected in str(info.value)


def test_tensor_parallel_share_counts_on_each_of_its_devices(tmp_path: Path) -> None:
    tp = engine(9001, gpu_memory_utilization=0.5, tensor_parallel_size=2, devices=[0, 1])
    data = {"platform": "gpu", "models": [{"name": "a", "engine": tp}, {"name": "b", "engine": engine(9002)}]}
    data["models"][1]["engine"] |= {"gpu_memory_utilization": 0.5, "devices": [1]}  # type: ignore[index]
    with pytest.raises(
        ConfigError, match=r"models\[1\].engine.gpu_memory_utilization: engines on GPU 1 add up to 1.00"
    ):
        load_config(write(tmp_path, data))
    data["models"][1]["engine"]["gpu_memory_utilization"] = 0.45  # type: ignore[index]
    assert len(load_config(write(tmp_path, data)).models) == 2


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["models"][0].update(colour="red"), "models[0].colour: unknown key"),
        (lambda c: c["models"][1]["engine"].update(gpu_util=0.5), "models[1].engine.gpu_util: unknown key"),
        (lambda c: c.update(extra_top=1), "extra_top: unknown key"),
        (lambda c: c["models"][1].update(name="a"), "models[1].name: served name or alias 'a'"),
        (lambda c: c["models"][1].update(aliases=["first"]), "alias 'first' also used by models[0]"),
        (lambda c: c["models"][1]["engine"].update(port=9001), "models[1].engine.port: port 9001 also used"),
        (lambda c: c["models"][0]["engine"].update(port=8000), "port 8000 also used by gateway.port"),
        (lambda c: c["models"][0]["engine"].update(dtype="float8"), "models[0].engine.dtype"),
        (lambda c: c["models"][0]["engine"].update(gpu_memory_utilization=0.5), "is a GPU setting"),
        (lambda c: c["models"][0]["engine"].pop("max_model_len"), "models[0].engine.max_model_len: Field required"),
        (lambda c: c["models"][0].pop("engine"), "models[0]: needs an 'engine'"),
        (lambda c: c["models"][0].update(endpoints=["ftp://x"]), "must start with http://"),
        (lambda c: c["models"][0].update(routing={"policy": "random"}), "models[0].routing.policy: Input should be"),
        (lambda c: c["models"][0].update(routing={"cache_threshold": 0.3}), "cache_threshold applies to policy prefix"),
        (
            lambda c: c["models"][0].update(routing={"policy": "prefix", "session_header": "X"}),
            "session_header applies to policy session, not prefix",
        ),
        (lambda c: c["models"][0].update(routing={"resolve_interval_s": 1}), "resolve_interval_s applies to discovery"),
        (lambda c: c["models"][0].update(routing={"discovery": "dns", "resolve_interval_s": 0}), "greater than 0"),
        (
            lambda c: c["models"][0].update(endpoints=["https://e:1"], routing={"discovery": "dns"}),
            "models[0].endpoints[0]: discovery dns reaches each address over plain http://",
        ),
    ],
)
def test_invalid_configs_name_file_and_key(tmp_path: Path, mutate: Any, expected: str) -> None:
    data = cpu_config()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_gpu_memory_utilization_over_095_on_one_device(tmp_path: Path) -> None:
    data = {
        "platform": "gpu",
        "models": [
            {"name": "a", "engine": engine(9001, gpu_memory_utilization=0.5)},
            {"name": "b", "engine": engine(9002, gpu_memory_utilization=0.5)},
        ],
    }
    expected = r"models\[1\].engine.gpu_memory_utilization: engines on GPU 0 add up to 1.00"
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, data))
    data["models"][1]["engine"]["devices"] = [1]  # type: ignore[index]
    assert len(load_config(write(tmp_path, data)).models) == 2


def test_gpu_engine_needs_a_memory_share(tmp_path: Path) -> None:
    data = {"platform": "gpu", "models": [{"name": "a", "engine": engine(9001)}]}
    with pytest.raises(ConfigError, match="gpu_memory_utilization: is required"):
        load_config(write(tmp_path, data))


def test_missing_model_directory_is_reported(tmp_path: Path) -> None:
    data = cpu_config()
    data["models"][0]["engine"]["model"] = "./no-such-model"
    with pytest.raises(ConfigError, match=r"models\[0\].engine.model: .*no-such-model does not exist.*make models"):
        load_config(write(tmp_path, data))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("platform: [cpu\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_with_port_base_moves_every_port_and_round_trips(tmp_path: Path) -> None:
    config = load_config(ROOT / "engine_config" / "cpu.yaml", check_paths=False)
    moved = config.with_port_base(8400)
    assert moved.gateway.port == 8400
    assert [m.engine.port for m in moved.models if m.engine] == [8501, 8502]
    assert [m.engine.model for m in moved.models if m.engine] == [m.engine.model for m in config.models if m.engine]
    assert load_config(moved.write(tmp_path / "moved.yaml"), check_paths=False) == moved


SHIPPED_WITH_A_GATEWAY = [
    "cpu.yaml", "test.yaml", "gpu.yaml", "gpu-h100.yaml", "gpu-l4.yaml", "gpu-t4.yaml", "gpu-tp2.yaml",
    "compose-gateway.yaml", "k8s-gateway.yaml", "replicas.yaml",
]  # fmt: skip


@pytest.mark.parametrize("name", SHIPPED_WITH_A_GATEWAY)
def test_shipped_configs_define_assistant_over_qwen_and_r1_with_mirror_and_canary_off(name: str) -> None:
    config = load_config(ROOT / "engine_config" / name, check_paths=False)
    [traffic] = config.traffic
    assert traffic.name == "assistant"
    primary, candidate = config.find_model(traffic.primary), config.find_model(traffic.candidate)
    assert primary is not None and "qwen" in primary.names
    assert candidate is not None and "r1" in candidate.names
    assert traffic.mirror_fraction == 0 and traffic.split is None and traffic.store_prompts is False


def with_traffic(**fields: Any) -> dict[str, Any]:
    return cpu_config(traffic=[{"name": "assistant", "primary": "first", "candidate": "b"} | fields])


def test_a_traffic_section_validates_with_aliases_and_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, with_traffic(split={"first": 9, "second": 1})), check_paths=False)
    [traffic] = config.traffic
    assert (traffic.primary, traffic.candidate, traffic.split) == ("first", "b", {"first": 9, "second": 1})
    assert traffic.store_prompts is False and traffic.mirror_fraction == 0
    assert traffic.retention.max_pairs == 10_000 and traffic.retention.max_age_days == 30


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": "first"}, "traffic[0].name: 'first' is already a model name or alias"),
        ({"primary": "nope"}, "traffic[0].primary: no model is named 'nope'"),
        ({"candidate": "a"}, "traffic[0].candidate: is the same model as primary (a)"),
        ({"mirror_fraction": 1.5}, "traffic[0].mirror_fraction: Input should be less than or equal to 1"),
        ({"split": {"c": 1}}, "traffic[0].split: 'c': weights are for the primary or the candidate"),
        ({"split": {"a": 1, "first": 2}}, "a has a weight already"),
        ({"split": {"a": -1, "b": 2}}, "a weight is a finite number >= 0"),
        ({"split": {"a": float("nan")}}, "a weight is a finite number >= 0"),
        ({"split": {"a": 0, "b": 0}}, "the weights must add up to more than 0"),
        ({"mirror_max_in_flight": 0}, "traffic[0].mirror_max_in_flight"),
        ({"store_prompt": True}, "traffic[0].store_prompt: unknown key"),
        ({"retention": {"max_pairs": 0}}, "traffic[0].retention.max_pairs"),
    ],
)
def test_invalid_traffic_sections_name_the_key(tmp_path: Path, fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, with_traffic(**fields)), check_paths=False)
    assert expected in str(info.value)


def test_a_traffic_name_is_defined_once(tmp_path: Path) -> None:
    data = with_traffic()
    data["traffic"].append(dict(data["traffic"][0]))
    with pytest.raises(ConfigError, match=r"traffic\[1\].name: 'assistant' is defined twice"):
        load_config(write(tmp_path, data), check_paths=False)


def test_routing_defaults_to_todays_behaviour_and_takes_every_policy(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, cpu_config()))
    assert config.models[0].routing.policy == "least_loaded" and config.models[0].routing.discovery == "static"
    data = cpu_config()
    data["models"][0]["routing"] = {"policy": "session", "session_header": "X-Tenant"}
    data["models"][1] |= {"endpoints": ["http://engines:8102"]}
    data["models"][1]["routing"] = {
        "policy": "prefix",
        "discovery": "dns",
        "resolve_interval_s": 2,
        "cache_threshold": 0.3,
        "balance_abs_threshold": 16,
        "balance_rel_threshold": 1.2,
        "max_tree_chars": 1_000_000,
    }
    a, b = load_config(write(tmp_path, data)).models
    assert a.routing.session_header == "X-Tenant"
    assert b.routing.discovery == "dns" and b.routing.resolve_interval_s == 2 and b.routing.max_tree_chars == 1_000_000


def test_k8s_gateway_discovers_engine_pods() -> None:
    config = load_config(ROOT / "engine_config" / "k8s-gateway.yaml", check_paths=False)
    for model in config.models:
        assert model.routing.discovery == "dns" and model.routing.resolve_interval_s == 5, model.name


def test_a_dumped_config_loads_again(tmp_path: Path) -> None:
    # The tests and benchmarks write configs with model_dump: every default is spelled out.
    data = cpu_config()
    data["models"][0]["routing"] = {"policy": "prefix", "cache_threshold": 0.4}
    config = load_config(write(tmp_path, data))
    again = load_config(write(tmp_path, config.model_dump(mode="json")))
    assert again == config
