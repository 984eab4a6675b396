"""Which local engines start together, and with what: the launch plan.

    waves = engine_waves(config)                       # [[ModelSpec, ...], ...], in start order
    print(json.dumps(plan_json(config, log_dir=Path("logs")), indent=2))   # `server.py --dry-run`

vLLM sizes an engine's KV cache from whole-device free-memory deltas taken during its own
startup (`MemorySnapshot` / `memory_profiling` in vllm/utils/mem_utils.py, `request_memory` in
vllm/v1/worker/utils.py): whatever another process allocates on the GPU meanwhile is charged to
the engine being profiled. Two engines started at once on one GPU shrink each other's cache or
fail with "No available memory for the cache blocks" (vLLM issues #55827, #9198, #10643). So
engines that share a GPU start one after another, each once the previous one answers /health;
engines on other GPUs start in the same wave. On the CPU backend the KV cache is a fixed
VLLM_CPU_KVCACHE_SPACE, nothing is measured, and every CPU engine starts in the first wave.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from gateway.config import DeploymentConfig, EngineSpec, ModelSpec, Platform


def shares_device(a: EngineSpec, b: EngineSpec, platform: Platform) -> bool:
    """Must `a` and `b` start one after the other? (Only GPU engines on a common device.)"""
    return platform == "gpu" and bool(set(a.devices) & set(b.devices))


def engine_waves(config: DeploymentConfig) -> list[list[ModelSpec]]:
    """Local engines in start order: each engine goes in the wave after the last earlier engine
    it shares a device with, so a wave never holds two engines of one GPU."""
    waves: list[list[ModelSpec]] = []
    placed: list[tuple[int, EngineSpec]] = []
    for model in config.models:
        if model.engine is None:
            continue
        after = [wave for wave, other in placed if shares_device(model.engine, other, config.platform)]
        wave = max(after) + 1 if after else 0
        placed.append((wave, model.engine))
        if wave == len(waves):
            waves.append([])
        waves[wave].append(model)
    return waves


def plan_json(config: DeploymentConfig, *, log_dir: Path, python: str = sys.executable) -> dict[str, Any]:
    """The launch plan as data: `{"platform", "gateway", "waves": [[{"name", "argv", "env", "device", ...}]]}`.

    `env` is what the supervisor adds to its own environment for that engine."""
    spec = config.gateway
    return {
        "platform": config.platform,
        "gateway": {
            "url": f"http://{spec.host}:{spec.port}",
            "drain_timeout_s": spec.drain_timeout_s,
            "endpoints": {m.name: m.endpoints for m in config.models if m.endpoints},
        },
        "waves": [
            [
                {
                    "name": model.name,
                    "argv": model.engine.to_argv(model.name, python=python),
                    "env": model.engine.to_env(config.platform),
                    "device": model.engine.device_label(config.platform),
                    "devices": list(model.engine.devices) if config.platform == "gpu" else [],
                    "url": model.engine.url,
                    "startup_timeout_s": model.engine.startup_timeout_s,
                    "shutdown_timeout_s": model.engine.shutdown_timeout_s,
                    "log": os.fspath(log_dir / f"{model.name}.log"),
                }
                for model in wave
                if model.engine is not None
            ]
            for wave in engine_waves(config)
        ],
    }
