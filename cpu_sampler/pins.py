"""The vLLM this plugin was checked against, and the source of every vLLM function it relies on.

    problems = check()   # [] on the pinned vLLM; else what differs (the plugin then stays out)

The plugin reproduces these functions' results exactly, so it is only correct for their exact
source: a change in any of them (a new vLLM) must fail `tests/test_cpu_sampler_plugin.py` and
keep the plugin from installing itself until it has been checked again. To re-pin after that
check: `python -m cpu_sampler.pins` prints the current hashes.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect

import vllm

VLLM_VERSION = "0.32.0"

# "module:qualname" -> the first 16 hex digits of the sha256 of inspect.getsource(). What each is to us:
SOURCES = {
    # replaced: our top-k/top-p returns what these return
    "vllm.v1.sample.ops.topk_topp_sampler:apply_top_k_top_p": "6550653c22b49376",
    "vllm.v1.sample.ops.topk_topp_sampler:apply_top_k_top_p_pytorch": "d6bcc4924866e6b9",
    "vllm.v1.sample.ops.topk_topp_sampler:apply_top_k_only": "4af02a4dad88c663",
    # replaced (forward_cpu), and callers that must look `forward_cpu` and `apply_top_k_top_p` up
    # at call time; fused_gumbel_argmax is C++, checked by behaviour in the tests
    "vllm.v1.sample.ops.topk_topp_sampler:TopKTopPSampler.__init__": "380ab6200fc8167f",
    "vllm.v1.sample.ops.topk_topp_sampler:TopKTopPSampler.forward_cpu": "6d05adf47d121861",
    "vllm.v1.sample.ops.topk_topp_sampler:TopKTopPSampler.forward_native": "b9a8def88e19ac8c",
    # replaced: our penalties return what these return
    "vllm.v1.sample.ops.penalties:apply_all_penalties": "01eb8c263bfd01f6",
    "vllm.v1.sample.ops.penalties:_convert_to_tensors": "04991b1f117886aa",
    "vllm.model_executor.layers.utils:apply_penalties": "faa4a441a318713e",
    "vllm.model_executor.layers.utils:get_token_bin_counts_and_mask": "fe2561ef6f181a13",
    "vllm._custom_ops:apply_repetition_penalties": "b592a58a16f6ea3d",
    "vllm._custom_ops:apply_repetition_penalties_torch": "ab604809f5eadeec",
    # callers: `sample` must call the sampler module with (logits, generators, k, p) after
    # temperature; `apply_penalties` must look `apply_all_penalties` up in the module at call time
    "vllm.v1.sample.sampler:Sampler.sample": "552aec3ef32cc225",
    "vllm.v1.sample.sampler:Sampler.apply_penalties": "60daa4b6c511c1cf",
}


def resolve(name: str) -> object:
    module_name, _, qualname = name.partition(":")
    target: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def source_hash(name: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(name)).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def check() -> list[str]:
    """What differs from the pinned vLLM: its version and any function whose source changed."""
    problems = []
    if vllm.__version__ != VLLM_VERSION:
        problems.append(f"vLLM {vllm.__version__} (pinned: {VLLM_VERSION})")
    for name, digest in SOURCES.items():
        try:
            current = source_hash(name)
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if current != digest:
            problems.append(f"{name}: source changed (sha256 {current}, pinned {digest})")
    return problems


if __name__ == "__main__":
    for key in SOURCES:
        print(f'    "{key}": "{source_hash(key)}",')
