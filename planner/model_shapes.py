"""A model's shape, read from its Hugging Face `config.json`, and the sizes that follow from it.

    shape = load_shape("Qwen/Qwen2.5-1.5B-Instruct")   # bundled copy in deploy/model_configs/
    shape = load_shape("/work/main/.cache/models/r1-tiny")   # a local model directory
    shape.parameter_count()          # 1_543_714_304
    shape.kv_bytes_per_token(2)      # 28_672 (28 layers x 2 KV heads x 128 x K and V x 2 bytes)

Where `config.json` comes from, first match wins: a local directory (the engine's `model`
is a path), the bundled copy of a production model's config (offline use), then the
Hugging Face cache under $HF_HOME (or ~/.cache/huggingface).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_CONFIGS = ROOT / "deploy" / "model_configs"

# Dense decoders whose parameters this module knows how to count. Qwen2 always has a bias
# on q, k and v; Llama-style models have one only when `attention_bias` says so.
_QKV_BIAS = {"Qwen2ForCausalLM": True}
SUPPORTED_ARCHITECTURES = frozenset({"Qwen2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM"})


@dataclass(frozen=True)
class ModelShape:
    source: str  # where config.json was read
    architecture: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool
    config_dtype: str  # torch_dtype / dtype of the checkpoint, e.g. "bfloat16"
    max_position_embeddings: int

    def parameter_count(self) -> int:
        """Parameters of a dense decoder: embeddings, per-layer attention + SwiGLU MLP + norms,
        final norm, and the LM head unless it is tied to the embeddings."""
        q_out = self.num_attention_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        attention = self.hidden_size * (q_out + 2 * kv_out) + q_out * self.hidden_size
        if self.qkv_bias:
            attention += q_out + 2 * kv_out
        mlp = 3 * self.hidden_size * self.intermediate_size  # gate, up, down
        norms = 2 * self.hidden_size
        embeddings = self.vocab_size * self.hidden_size
        lm_head = 0 if self.tie_word_embeddings else embeddings
        return embeddings + self.num_layers * (attention + mlp + norms) + self.hidden_size + lm_head

    def kv_bytes_per_token(self, dtype_bytes: float, *, tensor_parallel: int = 1) -> int:
        """KV cache bytes one token takes on one GPU: layers x KV heads x head_dim x (K, V) x dtype.

        With tensor parallelism each GPU holds num_kv_heads / tp heads, and at least one
        (vLLM replicates KV heads when tp exceeds their number)."""
        heads = max(1, self.num_kv_heads // tensor_parallel)
        return round(self.num_layers * heads * self.head_dim * 2 * dtype_bytes)


def load_shape(model: str) -> ModelShape:
    """The shape of `model` (a local directory or a hub id); FileNotFoundError says where it looked."""
    path = find_config(model)
    raw = json.loads(path.read_text())
    return shape_from_config(raw, source=str(path))


def find_config(model: str) -> Path:
    candidates: list[Path] = []
    local = Path(model).expanduser()
    if model.startswith((".", "/", "~")) or local.is_dir():
        candidates.append(local / "config.json")
    else:
        candidates.append(BUNDLED_CONFIGS / model / "config.json")
        candidates.extend(_hf_cache_configs(model))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates) or model
    raise FileNotFoundError(f"no config.json for {model!r} (looked in {looked})")


def _hf_cache_configs(model: str) -> list[Path]:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    snapshots = home / "hub" / f"models--{model.replace('/', '--')}" / "snapshots"
    return sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []


def shape_from_config(raw: dict[str, Any], *, source: str = "(dict)") -> ModelShape:
    config = raw.get("text_config", raw)  # multimodal wrappers keep the decoder here
    architecture = (config.get("architectures") or raw.get("architectures") or ["?"])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{source}: architecture {architecture} is not one the planner can size "
            f"(supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))})"
        )
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    return ModelShape(
        source=source,
        architecture=architecture,
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        intermediate_size=int(config["intermediate_size"]),
        vocab_size=int(config["vocab_size"]),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=_QKV_BIAS.get(architecture, bool(config.get("attention_bias", False))),
        # transformers 5 writes "dtype"; older versions "torch_dtype".
        config_dtype=str(config.get("dtype") or config.get("torch_dtype") or "float32"),
        max_position_embeddings=int(config.get("max_position_embeddings", 0)),
    )
