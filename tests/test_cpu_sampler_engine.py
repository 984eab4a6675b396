"""Real engines with and without the cpu_sampler plugin sample the same tokens for the same seeds.

The session stack's qwen-tiny runs with the plugin (the default); this module starts a second
qwen-tiny with `fast_cpu_sampler: false` (FAST_CPU_SAMPLER=0, vLLM's own sampler) and sends
both the same seeded requests, one at a time so both engines see the same batches: qwen's
generation_config defaults (temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.1),
R1's card settings, a flat high-temperature setting (the replay tier), top-k alone and
temperature alone. CI cost: one extra tiny engine (about 45 s to start) and 30 short requests
to each engine, about 90 s in all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.supervisor import EngineSupervisor
from tests.conftest import Stack

pytestmark = pytest.mark.engines

MODEL = "qwen-tiny"
SETTINGS: list[dict[str, Any]] = [
    {},  # the engine applies qwen-tiny's generation_config.json
    {"temperature": 0.6, "top_p": 0.95},
    {"temperature": 1.8, "top_p": 0.99},
    {"temperature": 0.8, "top_k": 5},
    {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0},
]
SEEDS = (1, 2, 3)
PROMPT = "The history of the city began when"


@pytest.fixture(scope="module")
def plugin_off(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(url, log) of qwen-tiny as the stack serves it, with vLLM's own sampler."""
    model = stack.config.find_model(MODEL)
    assert model is not None and model.engine is not None
    port = int(os.environ.get("TEST_PORT_BASE", "8010")) + 170
    engine = model.engine.model_copy(update={"port": port, "fast_cpu_sampler": False})
    single = stack.config.model_copy(update={"models": [model.model_copy(update={"engine": engine})]})
    log_dir = tmp_path_factory.mktemp("plugin-off")
    supervisor = EngineSupervisor(single, log_dir=log_dir, progress=print)
    supervisor.start_all()
    try:
        yield engine.url, log_dir / f"{MODEL}.log"
    finally:
        supervisor.stop_all()


def complete(url: str, settings: dict[str, Any], seed: int) -> str:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 24, "seed": seed, "ignore_eos": True} | settings
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_same_tokens_with_and_without_the_plugin(stack: Stack, plugin_off: tuple[str, Path]) -> None:
    off_url, off_log = plugin_off
    on_url = stack.engine_url(MODEL)
    texts = {}
    for i, settings in enumerate(SETTINGS):
        with_plugin = [complete(on_url, settings, seed) for seed in SEEDS]
        without = [complete(off_url, settings, seed) for seed in SEEDS]
        assert with_plugin == without, settings
        texts[i] = with_plugin
    assert len(set(texts[2])) == len(SEEDS), texts[2]  # sampled for real: each seed its own text
    # One line per engine process that sampled (a restarted engine appends to the same log).
    logs = sorted(stack.log_dir.glob(f"{MODEL}.log*"))  # the engine log and its rotated backups
    lines = [line for log in logs for line in log.read_text(errors="replace").splitlines()]
    active = [line.split(")")[0] for line in lines if "cpu_sampler active" in line]
    assert active and len(active) == len(set(active)), active
    assert not any("cpu_sampler active" in log.read_text(errors="replace") for log in off_log.parent.glob("*.log*"))
