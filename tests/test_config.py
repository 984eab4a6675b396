from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config
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
    assert model.engine.to_env("cpu") == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "0"}


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
    data["models"][1]["engine"]["device"] = 1  # type: ignore[index]
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
