"""After an engine starts: compare the KV cache it logged with the planner's prediction.

    report = check_kv_cache(engine_name, spec, "cpu", log_text)
    if report is not None and report.short:
        log.warning(report.message)     # the cache is >10% smaller than planned

vLLM logs `GPU KV cache size: N tokens` (`CPU KV cache size` on the CPU backend) once its
cache is allocated (vllm/v1/core/kv_cache_utils.py). A GPU engine that got much less than
planned was usually profiled while another process was allocating on the same device (see
gateway/launch_plan.py); on CPU the size is exact and the two numbers must agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.config import EngineSpec, Platform
from planner.gpus import Gpu, gpu_with_memory
from planner.memory import plan_engine
from planner.model_shapes import load_shape

SHORT_FRACTION = 0.10  # warn when the engine's cache is this much smaller than predicted
_LOGGED = re.compile(r"(?:GPU|CPU) KV cache size: ([\d,]+) tokens")
GIB = 2**30


# Why an engine's cache comes out short, by platform: a GPU engine profiled while another
# process allocated on its device (vLLM issue #55827); on CPU the size is exact, so the engine was
# not started with the settings the plan read.
_SHORT_CAUSE: dict[Platform, str] = {
    "gpu": "was the GPU shared with an engine that was starting? (see the launch plan: server.py --dry-run)",
    "cpu": "the CPU cache is exact: was the engine started with other settings than the config's?",
}


@dataclass(frozen=True)
class KvReport:
    logged_tokens: int
    predicted_tokens: int
    platform: Platform

    @property
    def ratio(self) -> float:
        return self.logged_tokens / self.predicted_tokens if self.predicted_tokens else float("inf")

    @property
    def short(self) -> bool:
        return self.ratio < 1 - SHORT_FRACTION

    def message(self, name: str) -> str:
        verdict = (
            f"{100 * (1 - self.ratio):.0f}% SMALLER than planned: {_SHORT_CAUSE[self.platform]}"
            if self.short
            else "as planned"
            if self.logged_tokens == self.predicted_tokens
            else f"{100 * (self.ratio - 1):+.1f}% of plan"
        )
        return (
            f"engine {name}: KV cache {self.logged_tokens:,} tokens, planner predicted "
            f"{self.predicted_tokens:,}: {verdict}"
        )


def logged_kv_tokens(log_text: str) -> int | None:
    """The last KV cache size the engine logged, or None."""
    found = _LOGGED.findall(log_text)
    return int(found[-1].replace(",", "")) if found else None


def check_kv_cache(
    name: str, spec: EngineSpec, platform: Platform, log_text: str, *, gpu_memory_bytes: int | None = None
) -> KvReport | None:
    """None when the log has no size yet or the prediction needs what is not known here
    (a GPU's memory, the model's config.json)."""
    logged = logged_kv_tokens(log_text)
    if logged is None:
        return None
    gpu: Gpu | None = None
    if platform == "gpu":
        if gpu_memory_bytes is None:
            return None
        gpu = gpu_with_memory(gpu_memory_bytes / GIB)
    try:
        shape = load_shape(spec.model)
    except (OSError, ValueError, KeyError):
        return None
    plan = plan_engine(name, spec, shape, platform, gpu)
    return KvReport(logged, plan.kv_tokens, platform)


def device_memory_bytes(index: int) -> int | None:
    """Total memory of one NVIDIA GPU (NVML), or None where there is none."""
    try:
        import pynvml  # noqa: PLC0415 - optional (nvidia-ml-py): only useful with a GPU

        pynvml.nvmlInit()
    except Exception:  # no library, no driver or no device: all mean "not known here"
        return None
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).total)
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()
