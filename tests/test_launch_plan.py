"""The launch plan (`server.py --dry-run`) of every shipped config, and every engine argv in it
parsed by vLLM's own argument parser, so a misspelt or removed flag fails here, not on a GPU host."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import server
from gateway.config import load_config
from gateway.launch_plan import engine_waves
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "engine_config").glob("*.yaml"))


def dry_run(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert server.main(["--config", str(path), "--dry-run"]) == 0
    plan: dict[str, Any] = json.loads(capsys.readouterr().out)
    return plan


@cache
def vllm_parser() -> Any:
    """vLLM 0.32's own `vllm serve` / api_server parser (importing vLLM takes ~15 s: once)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser  # noqa: PLC0415 - slow import
    from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: PLC0415

    return make_arg_parser(FlexibleArgumentParser())


def parse_with_vllm(argv: list[str]) -> Any:
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    parser = vllm_parser()
    # argparse takes any unambiguous prefix (`--max-num-seq` is read as `--max-num-seqs`), so a
    # flag renamed in a later vLLM could still "parse": require vLLM's exact spelling too.
    for arg in argv[3:]:
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and flag not in parser._option_string_actions:
            raise AssertionError(f"vLLM's parser refused {flag}: not one of its flags as spelt")
    try:
        return parser.parse_args(argv[3:])
    except SystemExit as exc:  # argparse's way of refusing
        raise AssertionError(f"vLLM's parser refused {argv[3:]}") from exc


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_dry_run_prints_the_waves_and_starts_nothing(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = dry_run(path, capsys)
    config = load_config(path, check_paths=False)
    local = [m for m in config.models if m.engine is not None]
    steps = [step for wave in plan["waves"] for step in wave]
    assert sorted(s["name"] for s in steps) == sorted(m.name for m in local)
    for wave in plan["waves"]:
        assert wave, "no empty waves"
        if config.platform == "gpu":  # never two engines of one GPU in a wave
            seen: set[int] = set()
            for step in wave:
                assert not seen & set(step["devices"]), (path.name, wave)
                seen |= set(step["devices"])
    for step in steps:
        model = config.find_model(step["name"])
        assert model is not None and model.engine is not None
        assert step["argv"] == model.engine.to_argv(model.name, python=step["argv"][0])
        assert step["env"] == model.engine.to_env(config.platform)
        assert step["url"] == model.engine.url
        if config.platform == "gpu":
            assert step["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, step["devices"]))
            assert step["device"] == "gpu:" + step["env"]["CUDA_VISIBLE_DEVICES"]
    assert plan["gateway"]["url"] == f"http://{config.gateway.host}:{config.gateway.port}"


def test_waves_of_the_shipped_configs(capsys: pytest.CaptureFixture[str]) -> None:
    def shape(name: str) -> list[int]:
        return [len(wave) for wave in dry_run(ROOT / "engine_config" / name, capsys)["waves"]]

    for one_gpu in ("gpu.yaml", "gpu-l4.yaml", "gpu-t4.yaml", "gpu-h100.yaml", "gpu-engine-host.yaml"):
        assert shape(one_gpu) == [1, 1], one_gpu  # both models on GPU 0: one after the other
    assert shape("gpu-tp2.yaml") == [1, 1]  # both TP engines span GPUs 0 and 1
    assert shape("cpu.yaml") == [2] and shape("test.yaml") == [2]  # CPU: together
    assert shape("replicas.yaml") == [] and shape("k8s-gateway.yaml") == []  # no local engines


def test_waves_put_engines_of_other_gpus_together() -> None:
    config = load_config(ROOT / "engine_config" / "gpu.yaml", check_paths=False)
    first, second = config.models
    assert first.engine is not None and second.engine is not None
    moved = second.model_copy(update={"engine": second.engine.model_copy(update={"devices": [1]})})
    spread = config.model_copy(update={"models": [first, moved]})
    assert [[m.name for m in wave] for wave in engine_waves(spread)] == [[first.name, second.name]]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_engine_argv_parses_with_vllms_own_parser(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(path, check_paths=False)
    for step in (s for wave in dry_run(path, capsys)["waves"] for s in wave):
        model = config.find_model(step["name"])
        assert model is not None and model.engine is not None
        spec = model.engine
        args = parse_with_vllm(step["argv"])
        # What vLLM understood is what the config says.
        assert args.model == spec.model and args.served_model_name == [model.name]
        assert (args.host, args.port, args.max_model_len) == (spec.host, spec.port, spec.max_model_len)
        assert args.tensor_parallel_size == spec.tensor_parallel_size
        assert args.shutdown_timeout == spec.shutdown_timeout_s
        assert args.disable_uvicorn_access_log is True
        if spec.gpu_memory_utilization is not None:
            assert args.gpu_memory_utilization == spec.gpu_memory_utilization


def test_vllms_parser_catches_a_misspelt_flag() -> None:
    config = load_config(ROOT / "engine_config" / "gpu.yaml", check_paths=False)
    model = config.models[0]
    assert model.engine is not None
    for wrong in (["--max-num-sequences", "8"], ["--max-num-seq", "8"]):  # unknown; a mere prefix
        typo = model.engine.model_copy(update={"extra_args": wrong})
        with pytest.raises(AssertionError, match="refused"):
            parse_with_vllm(typo.to_argv(model.name))
