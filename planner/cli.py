"""Plan the GPU (or CPU) memory of a deployment's engines: weights, KV cache, concurrency.

    python scripts/plan_memory.py --config engine_config/gpu.yaml --gpu H200
    python scripts/plan_memory.py --config engine_config/gpu-t4.yaml --gpu T4
    python scripts/plan_memory.py --config engine_config/gpu.yaml --gpu-gib 48 --typical-len 2048
    python scripts/plan_memory.py --config engine_config/test.yaml          # CPU: predicted KV tokens
    python scripts/plan_memory.py --config engine_config/gpu.yaml --gpu L4 --json

Models are read from their config.json: a local model directory, the bundled copies of the
production models in deploy/model_configs/, or the Hugging Face cache. Exit status 1 when the
plan has warnings (an engine that cannot start, an unsupported dtype, an over-full GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.errors import ConfigError
from planner.gpus import GPUS, Gpu, find_gpu, gpu_with_memory
from planner.memory import DEFAULT_SPLIT_TOTAL, DEFAULT_TYPICAL_LEN, DeploymentPlan, plan_deployment
from planner.report import render_plan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="deployment YAML")
    card = parser.add_mutually_exclusive_group()
    card.add_argument("--gpu", help=f"GPU by name: {', '.join(GPUS)}")
    card.add_argument("--gpu-gib", type=float, help="GPU memory in GiB, for a card not in the list")
    parser.add_argument("--typical-len", type=int, default=DEFAULT_TYPICAL_LEN, help="a typical sequence length")
    parser.add_argument(
        "--split-total", type=float, default=DEFAULT_SPLIT_TOTAL, help="utilization the suggested splits add up to"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gpu: Gpu | None = None
        if args.gpu:
            gpu = find_gpu(args.gpu)
        elif args.gpu_gib:
            gpu = gpu_with_memory(args.gpu_gib)
        config = load_config(args.config, check_paths=False)
        if not any(m.engine for m in config.models):
            print(f"{args.config}: no local engines (only endpoints); plan the config of each engine host")
            return 0
        plan = plan_deployment(config, gpu, typical_len=args.typical_len, split_total=args.split_total)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan_as_json(plan), indent=2) if args.json else render_plan(plan))
    has_warnings = bool(plan.warnings) or any(e.warnings for e in plan.engines)
    return 1 if has_warnings else 0


def plan_as_json(plan: DeploymentPlan) -> dict[str, object]:
    data = dataclasses.asdict(plan)
    for engine in data["engines"]:
        engine["shape"].pop("source", None)
    return data


def run() -> None:
    """The console entry point."""
    sys.exit(main())


if __name__ == "__main__":  # python -m planner.cli
    run()
