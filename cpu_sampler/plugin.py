"""The vLLM general plugin: installs the exact fast sampler pieces into vLLM's CPU sampler.

    # pyproject.toml registers it; vLLM calls it in every process it starts (API server, engine
    # core, workers) through vllm.plugins.load_general_plugins():
    [project.entry-points."vllm.general_plugins"]
    cpu_sampler = "cpu_sampler.plugin:register"

    FAST_CPU_SAMPLER=0 python -m vllm.entrypoints.openai.api_server ...   # vLLM's own sampler

It replaces `TopKTopPSampler.forward_cpu` (bound when the engine builds its sampler, after
plugins load) and two module-level functions that vLLM looks up at call time:
`topk_topp_sampler.apply_top_k_top_p` (for its other callers) and `sampler.apply_all_penalties`
(used by `Sampler.apply_penalties`). `pins.check()` guarantees that those callers and the
replaced functions are the source we checked. The engine's worker logs one line when it first
uses them.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from vllm.platforms import current_platform
from vllm.v1.sample import sampler
from vllm.v1.sample.ops import topk_topp_sampler

from cpu_sampler import pins
from cpu_sampler.penalties import make_apply_all_penalties
from cpu_sampler.sampling import make_forward_cpu
from cpu_sampler.top_k_top_p import make_apply_top_k_top_p

ENV = "FAST_CPU_SAMPLER"  # "0" turns the plugin off; set by EngineSpec.to_env from `fast_cpu_sampler`
# Under vLLM's logger, so the line gets its format and process prefix, "(Worker pid=...) INFO ...".
logger = logging.getLogger("vllm.plugins.cpu_sampler")

F = TypeVar("F", bound=Callable[..., Any])


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def register() -> None:
    """Entry point: install on the CPU platform, on the pinned vLLM, unless turned off."""
    if not enabled():
        logger.debug("cpu_sampler: off (%s=%s)", ENV, os.environ.get(ENV))
        return
    if not current_platform.is_cpu():
        return
    if getattr(topk_topp_sampler.apply_top_k_top_p, "_cpu_sampler", False):
        return  # vLLM loads general plugins once per process, but be safe
    problems = pins.check()
    if problems:
        logger.warning(
            "cpu_sampler: NOT installed, vLLM differs from the one it was checked against: %s", "; ".join(problems)
        )
        return
    vllm_apply = topk_topp_sampler.apply_top_k_top_p
    replacements: list[tuple[ModuleType | type, str, Callable[[Any], Any]]] = [
        (topk_topp_sampler, "apply_top_k_top_p", make_apply_top_k_top_p),
        (
            topk_topp_sampler.TopKTopPSampler,
            "forward_cpu",
            lambda vllm_forward: make_forward_cpu(vllm_forward, vllm_apply),
        ),
        (sampler, "apply_all_penalties", make_apply_all_penalties),
    ]
    for module, name, make in replacements:
        original = getattr(module, name)
        setattr(module, name, _installed(make(original), original))
    logger.debug("cpu_sampler: installed in pid %d", os.getpid())


@functools.cache
def _announce() -> None:
    """One line per process on first use; only the engine's worker ever samples."""
    logger.info(
        "cpu_sampler active: exact top-k/top-p without sorting the vocabulary and the repetition penalty "
        "on seen tokens only (vLLM %s; %s=0 or `fast_cpu_sampler: false` turns it off)",
        pins.VLLM_VERSION,
        ENV,
    )


def _installed(ours: F, original: F) -> F:
    """`ours`, marked as installed, announcing itself on first use; `__wrapped__` points at vLLM's
    function, so `inspect.getsource` (and `pins.check`) still sees vLLM's source."""

    def call(*args: Any, **kwargs: Any) -> Any:
        _announce()
        return ours(*args, **kwargs)

    call.__wrapped__ = original  # type: ignore[attr-defined]
    call._cpu_sampler = True  # type: ignore[attr-defined]
    call.__name__ = getattr(original, "__name__", "cpu_sampler")
    call.__doc__ = ours.__doc__
    return call  # type: ignore[return-value]
