"""The memory planner (planner/, scripts/plan_memory.py) against hand calculations, transformers'
own parameter count, the configs' comments, and the KV size a real vLLM CPU engine logs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import transformers

from gateway.config import DeploymentConfig, EngineSpec, load_config
from gateway.kv_check import check_kv_cache
from planner import cli as plan_memory
from planner.gpus import GIB, find_gpu, gpu_with_memory
from planner.memory import logged_kv_tokens, plan_deployment, plan_engine
from planner.model_shapes import ModelShape, find_config, load_shape, shape_from_config
from planner.report import engine_table
from tests.conftest import TINY_CONFIG, Stack

ROOT = Path(__file__).resolve().parent.parent
R1 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
QWEN = "Qwen/Qwen2.5-1.5B-Instruct"


def deployment(platform: str, *engines: dict[str, Any]) -> DeploymentConfig:
    """A config built in memory (no file, so load_config's own over-0.95 check does not run)."""
    models = [{"name": f"m{i}", "engine": {"port": 9100 + i} | e} for i, e in enumerate(engines)]
    return DeploymentConfig.model_validate({"platform": platform, "models": models})


# --- model shapes ---------------------------------------------------------------------------


def test_bundled_configs_are_the_published_production_shapes() -> None:
    for model, tied in ((QWEN, True), (R1, False)):
        shape = load_shape(model)
        assert Path(shape.source).is_relative_to(ROOT / "deploy" / "model_configs")
        assert (shape.architecture, shape.num_layers, shape.hidden_size) == ("Qwen2ForCausalLM", 28, 1536)
        assert (shape.num_attention_heads, shape.num_kv_heads, shape.head_dim) == (12, 2, 128)
        assert (shape.vocab_size, shape.intermediate_size, shape.config_dtype) == (151936, 8960, "bfloat16")
        assert shape.tie_word_embeddings is tied


def test_kv_bytes_per_token_by_hand() -> None:
    shape = load_shape(QWEN)
    assert shape.kv_bytes_per_token(2) == 28 * 2 * 128 * 2 * 2 == 28_672
    assert shape.kv_bytes_per_token(1) == 14_336  # fp8 KV cache
    assert shape.kv_bytes_per_token(2, tensor_parallel=2) == 28 * 1 * 128 * 2 * 2  # one KV head per GPU
    assert shape.kv_bytes_per_token(2, tensor_parallel=4) == 28 * 1 * 128 * 2 * 2  # replicated, not split


def test_parameter_count_matches_transformers() -> None:
    llama: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    }  # SmolLM2-135M's shape
    cases: list[tuple[ModelShape, str | dict[str, Any]]] = [
        (load_shape(QWEN), QWEN),
        (load_shape(R1), R1),
        (shape_from_config(llama), llama),
    ]
    for shape, source in cases:
        if isinstance(source, str):
            config = transformers.AutoConfig.from_pretrained(ROOT / "deploy" / "model_configs" / source)
        else:
            config = transformers.LlamaConfig(**{k: v for k, v in source.items() if k != "architectures"})
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        assert shape.parameter_count() == sum(p.numel() for p in model.parameters()), source
    assert load_shape(QWEN).parameter_count() == 1_543_714_304  # the "1.54B" of its model card
    assert load_shape(R1).parameter_count() == 1_543_714_304 + 151936 * 1536  # untied LM head


def test_config_found_in_local_dir_bundle_and_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "tiny"
    local.mkdir()
    (local / "config.json").write_text(json.dumps(TINY_CONFIG))
    assert load_shape(str(local)).num_layers == 2
    snapshot = tmp_path / "hf" / "hub" / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY_CONFIG))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert find_config("org/cached") == snapshot / "config.json"
    with pytest.raises(FileNotFoundError, match="org/missing"):
        find_config("org/missing")
    with pytest.raises(ValueError, match="architecture"):
        shape_from_config(TINY_CONFIG | {"architectures": ["MambaForCausalLM"]})


# --- GPU plans ------------------------------------------------------------------------------


def test_h200_at_045_each_matches_the_hand_calculation() -> None:
    config = load_config(ROOT / "engine_config" / "gpu.yaml", check_paths=False)
    plan = plan_deployment(config, find_gpu("H200"))
    engines = {e.name: e for e in plan.engines}

    total = 143_771 * 2**20  # H200 as nvidia-smi reports it: 143,771 MiB = 150,754,820,096 B
    budget = 67_839_669_044  # vLLM: ceil(total x 0.45)
    allowance = (
        2**30  # runtime: CUDA graphs, workspaces
        + 8192 * (2 * 8960 + 4 * 1536 + (12 + 2 * 2) * 128) * 2  # activations: 427,819,008
        + 128 * 151936 * 8  # sampler: 155,582,464
    )  # = 1,657,143,296
    block = 16 * 28_672  # 16 tokens x 28 layers x 2 KV heads x 128 x (K, V) x 2 bytes = 458,752
    hand = {
        # weights = parameters x 2 bytes; KV = budget - weights - allowance
        QWEN: {"weights": 3_087_428_608, "kv": 63_095_097_140, "blocks": 137_536, "tokens": 2_200_576},
        R1: {"weights": 3_554_176_000, "kv": 62_628_349_748, "blocks": 136_518, "tokens": 2_184_288},
    }
    assert budget == -(-total * 45 // 100)
    for name, expected in hand.items():
        engine = engines[name]
        assert engine.dtype == "bfloat16" and engine.kv_bytes_per_token == 28_672
        assert engine.budget_bytes == budget
        assert engine.weight_bytes == expected["weights"]
        assert engine.allowance.total == allowance == 1_657_143_296
        assert engine.kv_bytes == budget - expected["weights"] - allowance == expected["kv"]
        assert engine.num_blocks == expected["kv"] // block == expected["blocks"]
        assert engine.kv_tokens == expected["blocks"] * 16 == expected["tokens"]
        assert engine.seqs_at_max_len == expected["blocks"] / (16_384 // 16)  # 134.3 and 133.3
        assert engine.seqs_at_typical == expected["blocks"] / (1_024 // 16)  # 2,149 and 2,133
        assert engine.warnings == ()
    assert plan.warnings == []


def test_bf16_on_t4_is_flagged_and_the_t4_config_is_clean() -> None:
    gpu_yaml = load_config(ROOT / "engine_config" / "gpu.yaml", check_paths=False)
    plan = plan_deployment(gpu_yaml, find_gpu("T4"))
    for engine in plan.engines:
        assert any("bfloat16 is unsupported on T4" in w for w in engine.warnings), engine.name
    t4_yaml = load_config(ROOT / "engine_config" / "gpu-t4.yaml", check_paths=False)
    t4 = plan_deployment(t4_yaml, find_gpu("T4"))
    assert [e.warnings for e in t4.engines] == [(), ()] and t4.warnings == []
    auto = deployment("gpu", {"model": QWEN, "dtype": "auto", "max_model_len": 4096, "gpu_memory_utilization": 0.8})
    engine = plan_deployment(auto, find_gpu("V100-16G")).engines[0]
    assert engine.dtype == "float16" and "falls back to float16" in engine.warnings[0]


def test_engine_that_cannot_hold_one_sequence_is_flagged() -> None:
    config = deployment("gpu", {"model": R1, "max_model_len": 131072, "gpu_memory_utilization": 0.3})
    engine = plan_deployment(config, find_gpu("L4")).engines[0]
    assert engine.kv_tokens < 131072
    assert any("less than one sequence" in w for w in engine.warnings)
    starved = deployment("gpu", {"model": R1, "max_model_len": 4096, "gpu_memory_utilization": 0.2})
    engine = plan_deployment(starved, find_gpu("T4")).engines[0]  # 3 GiB: not even the weights fit
    assert engine.kv_bytes == 0 and engine.kv_tokens == 0
    assert any("do not fit" in w for w in engine.warnings)


def test_num_gpu_blocks_override_is_the_cache_vllm_allocates() -> None:
    # vLLM takes the override whatever the budget (kv_cache_utils.may_override_num_blocks); a CPU
    # SmolLM2-shaped engine with 96 blocks of 128 logs 12,288 tokens at max_model_len 4096.
    small = deployment("cpu", {"model": R1, "max_model_len": 4096, "kv_cache_gib": 4, "num_gpu_blocks_override": 96})
    engine = plan_deployment(small, None).engines[0]
    assert engine.num_blocks == 96 and engine.kv_tokens == logged_kv_tokens(96, 128, 4096) == 12_288
    assert engine.kv_bytes == 96 * 128 * engine.kv_bytes_per_token and engine.warnings == ()
    big = deployment(
        "gpu", {"model": R1, "max_model_len": 4096, "gpu_memory_utilization": 0.3, "num_gpu_blocks_override": 10**6}
    )
    engine = plan_deployment(big, find_gpu("L4")).engines[0]
    assert engine.num_blocks == 10**6 and any("allocates them anyway" in w for w in engine.warnings)
    # Two engines on one GPU: a utilization split is suggested only when it would size both caches.
    pair = [{"model": R1, "max_model_len": 4096, "gpu_memory_utilization": 0.4} for _ in range(2)]
    assert plan_deployment(deployment("gpu", *pair), find_gpu("L4")).splits
    pair[1] |= {"num_gpu_blocks_override": 512}
    assert plan_deployment(deployment("gpu", *pair), find_gpu("L4")).splits == []
    # ... so the startup check (gateway/kv_check.py) finds the logged size as planned, not short.
    spec = small.models[0].engine
    assert spec is not None
    report = check_kv_cache("m0", spec, "cpu", "CPU KV cache size: 12,288 tokens, Maximum concurrency ...")
    assert report is not None and not report.short and "as planned" in report.message("m0")


def test_engines_over_095_of_one_gpu_are_flagged() -> None:
    config = deployment(
        "gpu",
        {"model": R1, "max_model_len": 8192, "gpu_memory_utilization": 0.6, "devices": [0]},
        {"model": QWEN, "max_model_len": 8192, "gpu_memory_utilization": 0.5, "devices": [0]},
        {"model": QWEN, "max_model_len": 8192, "gpu_memory_utilization": 0.9, "devices": [1]},
    )
    plan = plan_deployment(config, find_gpu("A100-80G"))
    assert len(plan.warnings) == 1 and "GPU 0" in plan.warnings[0] and "1.10" in plan.warnings[0]


def test_tensor_parallel_splits_weights_and_kv_heads_over_its_gpus() -> None:
    tp2 = load_config(ROOT / "engine_config" / "gpu-tp2.yaml", check_paths=False)
    plan = plan_deployment(tp2, find_gpu("L4"))
    single = plan_deployment(load_config(ROOT / "engine_config" / "gpu.yaml", check_paths=False), find_gpu("L4"))
    for engine, alone in zip(plan.engines, single.engines, strict=True):
        assert engine.tensor_parallel == 2 and engine.devices == (0, 1)
        assert engine.kv_bytes_per_token == 28_672 // 2
        assert engine.weight_bytes == alone.weight_bytes // 2
        assert engine.warnings == ()
    assert plan.warnings == [] and len(plan.splits) >= 1  # one suggestion per pair, not per GPU
    assert len({s.label for s in plan.splits}) == len(plan.splits)
    fp8 = deployment(
        "gpu",
        {"model": R1, "max_model_len": 8192, "gpu_memory_utilization": 0.9, "kv_cache_dtype": "fp8", "block_size": 32},
    )
    engine = plan_deployment(fp8, find_gpu("L4")).engines[0]
    assert engine.kv_dtype == "fp8" and engine.kv_bytes_per_token == 28_672 // 2 and engine.block_size == 32


def test_suggested_splits_add_up_and_deliver_what_they_claim() -> None:
    config = load_config(ROOT / "engine_config" / "gpu.yaml", check_paths=False)
    gpu = find_gpu("L4")
    plan = plan_deployment(config, gpu, split_total=0.9)
    assert plan.splits and plan.splits[0].label == "equal KV tokens"
    for split in plan.splits:
        assert sum(split.utilizations.values()) <= 0.9 + 1e-9
        for model in config.models:
            assert model.engine is not None
            spec = model.engine.model_copy(update={"gpu_memory_utilization": split.utilizations[model.name]})
            replanned = plan_engine(model.name, spec, load_shape(model.engine.model), "gpu", gpu)
            assert replanned.kv_tokens == split.kv_tokens[model.name], (split.label, model.name)
    equal = plan.splits[0].kv_tokens
    assert abs(equal[R1] - equal[QWEN]) / equal[QWEN] < 0.01  # equal up to the 0.001 rounding


def test_gpu_catalogue_and_custom_sizes() -> None:
    assert find_gpu("h200") is find_gpu("H200")
    assert find_gpu("A10G") is find_gpu("A10")
    assert not find_gpu("T4").supports_bf16 and find_gpu("L4").supports_bf16
    assert gpu_with_memory(48).total_bytes == 48 * GIB
    with pytest.raises(ValueError, match="known"):
        find_gpu("B300")


def test_gpu_config_comments_show_the_current_plan() -> None:
    pattern = re.compile(
        r"^# Planner numbers \(python scripts/plan_memory\.py --config (\S+) --gpu (\S+)\):\n((?:#   .*\n)+)", re.M
    )
    checked = 0
    for path in sorted((ROOT / "engine_config").glob("gpu-*.yaml")):
        for config_path, gpu, block in pattern.findall(path.read_text()):
            assert ROOT / config_path == path, "the comment must name its own file"
            plan = plan_deployment(load_config(path, check_paths=False), find_gpu(gpu))
            assert [line[4:] for line in block.splitlines()] == engine_table(plan), f"{path.name} on {gpu}"
            checked += 1
    assert checked >= 6  # T4, L4, A10, H100, H200, TP 2


def test_cli_prints_the_plan_and_exits_nonzero_on_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan_memory.main(["--config", "engine_config/gpu.yaml", "--gpu", "H200"]) == 0
    out = capsys.readouterr().out
    assert "GPU H200: 140.40 GiB" in out and "2,200,576" in out and "suggested split" in out
    assert plan_memory.main(["--config", "engine_config/gpu.yaml", "--gpu", "T4"]) == 1
    assert "unsupported on T4" in capsys.readouterr().out
    assert plan_memory.main(["--config", "engine_config/gpu.yaml", "--gpu-gib", "24", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [e["kv_bytes_per_token"] for e in data["engines"]] == [28_672, 28_672]
    assert plan_memory.main(["--config", "engine_config/gpu.yaml", "--gpu", "nope"]) == 2
    assert plan_memory.main(["--config", "engine_config/k8s-gateway.yaml", "--gpu", "L4"]) == 0
    assert "no local engines" in capsys.readouterr().out


# --- CPU plans ------------------------------------------------------------------------------


def test_cpu_kv_tokens_by_hand() -> None:
    shape = shape_from_config(TINY_CONFIG)
    spec = EngineSpec(model="/tiny", dtype="float32", max_model_len=2048, kv_cache_gib=1, port=9000)
    engine = plan_engine("tiny", spec, shape, "cpu", None)
    # 2 layers x 1 KV head x 128 dims x (K, V) x 4 bytes = 2,048 B per token; 128-token blocks.
    assert engine.kv_bytes_per_token == 2 * 1 * 128 * 2 * 4 == 2048
    assert engine.num_blocks == 2**30 // (2048 * 128) == 4096
    assert engine.kv_tokens == int(4096 / (2048 // 128) * 2048) == 524_288
    odd = plan_engine("tiny", spec.model_copy(update={"max_model_len": 2000}), shape, "cpu", None)
    # vLLM counts whole blocks per request (ceil(2000 / 128) = 16) but multiplies by 2000.
    assert odd.kv_tokens == int(4096 / 16 * 2000) == 512_000
    unset = plan_engine("tiny", spec.model_copy(update={"kv_cache_gib": None}), shape, "cpu", None)
    assert any("kv_cache_gib" in w for w in unset.warnings)
    assert logged_kv_tokens(3, 128, 300) == int(3 / 3 * 300)


@pytest.mark.engines
def test_cpu_prediction_matches_the_kv_size_the_engine_logs(stack: Stack) -> None:
    plan = plan_deployment(stack.config, None)
    assert len(plan.engines) == 2
    for engine in plan.engines:
        log = (stack.log_dir / f"{engine.name}.log").read_text(errors="replace")
        # vllm/v1/core/kv_cache_utils.py: "%s KV cache size: %s tokens, Maximum concurrency for %s
        # tokens per request: %.2fx"; the last start in the log is the one running now.
        found = re.findall(r"CPU KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens", log)
        assert found, f"no KV cache size line in {engine.name}.log"
        tokens, max_len = (int(v.replace(",", "")) for v in found[-1])
        assert max_len == engine.max_model_len
        assert tokens == engine.kv_tokens, f"{engine.name}: engine logged {tokens:,}, planner said {engine.kv_tokens:,}"
    # The supervisor made the same comparison at startup (gateway/kv_check.py) and found them equal.
    server_log = stack.log_path.read_text(errors="replace")
    rows = {row["name"]: row for row in httpx.get(f"{stack.gateway_url}/engines", timeout=10).json()}
    for engine in plan.engines:
        shown = f"{engine.kv_tokens:,}"
        assert f"engine {engine.name}: KV cache {shown} tokens, planner predicted {shown}: as planned" in server_log
        row = rows[engine.name]
        assert row["kv_cache_tokens"] == row["kv_cache_tokens_planned"] == engine.kv_tokens
