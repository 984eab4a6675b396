"""Find and read the measurements a report is built from.

    bench = latest_bench(Path("results/bench"))     # BenchRun | None: the newest full-mode run (else quick)
    quality = latest_eval(Path("results/eval"))     # EvalRun | None: the newest finished evaluation
    config, path = deployment_config(bench, quality, explicit=None)

Nothing here computes: it only locates, reads and says what is missing. "Newest" is by the
time a run records for its own start, not the directory's mtime (a git checkout resets mtimes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.records import RecordStore
from gateway.config import DeploymentConfig, load_config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BenchRun:
    """One `make bench` run: results/bench/<run>/results.json."""

    directory: Path
    results: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.directory / "results.json"

    @property
    def mode(self) -> str:
        return str(self.results.get("plan", {}).get("mode", "?"))


@dataclass
class EvalRun:
    """One `make eval` run: summary.json and run.json, and records.jsonl when it is there
    (it is git-ignored, so committed runs have none)."""

    directory: Path
    summary: dict[str, Any]
    records: list[dict[str, Any]] | None

    @property
    def path(self) -> Path:
        return self.directory / "summary.json"

    @property
    def records_path(self) -> Path:
        return self.directory / "records.jsonl"

    @property
    def run(self) -> dict[str, Any]:
        return dict(self.summary.get("run") or {})


def load_bench(directory: Path) -> BenchRun:
    results = json.loads((directory / "results.json").read_text())
    if not isinstance(results.get("models"), dict) or "plan" not in results:
        raise ValueError(f"{directory}/results.json is not a `make bench` result (no plan/models)")
    return BenchRun(directory, results)


def latest_bench(results_dir: Path) -> BenchRun | None:
    """The newest full-mode run, else the newest quick one (a quick run is a smoke test)."""
    runs = []
    for path in sorted(results_dir.glob("*/results.json")):
        try:
            runs.append(load_bench(path.parent))
        except (ValueError, json.JSONDecodeError):
            continue  # e.g. results/bench/gateway: make bench-gateway's own format
    if not runs:
        return None
    return max(runs, key=lambda r: (r.mode == "full", str(r.results.get("started", ""))))


def load_eval(directory: Path) -> EvalRun:
    summary = json.loads((directory / "summary.json").read_text())
    if "suites" not in summary or "paired" not in summary:
        raise ValueError(f"{directory}/summary.json is not a `make eval` summary")
    store = RecordStore(directory / "records.jsonl")
    records = store.load() if store.path.exists() else None
    return EvalRun(directory, summary, records)


def latest_eval(results_dir: Path) -> EvalRun | None:
    runs = []
    for path in sorted(results_dir.glob("*/summary.json")):
        try:
            runs.append(load_eval(path.parent))
        except (ValueError, json.JSONDecodeError):
            continue
    if not runs:
        return None
    return max(runs, key=lambda r: str(r.run.get("finished") or r.run.get("started") or ""))


def deployment_config(
    bench: BenchRun | None, quality: EvalRun | None, *, explicit: Path | None, config_dir: Path = ROOT / "engine_config"
) -> tuple[DeploymentConfig, Path, str] | None:
    """The deployment the measurements were taken on: (config, path, how it was found).

    `explicit` wins; then the config the bench run recorded, if it still exists; then the
    config in `config_dir` that serves exactly the measured model names."""
    if explicit is not None:
        return load_config(explicit, check_paths=False), explicit, "given with --config"
    recorded = Path(str(bench.results.get("config"))) if bench and bench.results.get("config") else None
    if recorded is not None and recorded.exists():
        try:
            return load_config(recorded, check_paths=False), recorded, "recorded by the bench run"
        except ConfigError:
            pass
    measured = set(bench.results["models"]) if bench else set(quality.summary.get("models") or []) if quality else set()
    if not measured:
        return None
    for path in sorted(config_dir.glob("*.yaml")):
        try:
            config = load_config(path, check_paths=False)
        except ConfigError:
            continue
        if {m.name for m in config.models} == measured:
            how = "serves the measured model names"
            if recorded is not None:
                how += f" (the bench run's own config, {recorded}, is gone)"
            return config, path, how
    return None
