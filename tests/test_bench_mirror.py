"""benchmarks/mirror.py's records -> verdict, table and plot layer, and its options (no engines:
the measurement itself is `make bench-mirror`, run alone; see the README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.mirror import TARGET, parse_args, render, summarize, write


def run(ttft_ms: float, tok_s: float, *, saved: int = 8, problems: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "mirror_fraction": 1.0,
        "requests": 8,
        "ttft_p50_ms": ttft_ms,
        "ttft_p90_ms": ttft_ms * 2,
        "itl_p50_ms": 10.0,
        "output_tokens_per_s": tok_s,
        "wall_s": 5.0,
        "mirror": {"saved": saved, "dropped_candidate_full": 0, "dropped_mirror_limit": 0},
        "candidate_engine_output_tokens": 0,
        "problems": list(problems),
    }


def round_of(i: int, off: tuple[float, float], on: tuple[float, float], **extra: Any) -> dict[str, Any]:
    r_off, r_on = run(*off), run(*on, **extra)
    return {
        "round": i,
        "order": ["off", "on"] if i % 2 else ["on", "off"],
        "off": r_off,
        "on": r_on,
        "ttft_ratio": r_on["ttft_p50_ms"] / r_off["ttft_p50_ms"],
        "throughput_ratio": r_on["output_tokens_per_s"] / r_off["output_tokens_per_s"],
    }


def test_the_verdict_is_the_median_of_per_round_ratios_and_faster_is_not_a_failure() -> None:
    # One outlier round (TTFT +50%) does not decide; the median round is +2%.
    rounds = [
        round_of(1, (100, 500), (102, 495)),
        round_of(2, (100, 500), (150, 400)),
        round_of(3, (100, 500), (90, 510)),
    ]
    summary = summarize(rounds)
    assert summary["ttft_p50_ratio"] == 1.02 and summary["throughput_ratio"] == 0.99
    assert summary["within_target"] and summary["problems"] == []
    slower = summarize([round_of(1, (100, 500), (100 * (1 + TARGET) + 1, 500))])
    assert not slower["within_target"]
    less = summarize([round_of(1, (100, 500), (100, 500 * (1 - TARGET) - 1))])
    assert not less["within_target"]


def test_the_report_names_each_round_the_verdict_and_any_failed_check(tmp_path: Path) -> None:
    plan = vars(parse_args(["--quick"])) | {"candidates": ["fake"]}
    results = {
        "plan": plan,
        "load_before": [1.0, 1.0, 1.0],
        "load_after": [1.5, 1.0, 1.0],
        "rounds": {"fake": [round_of(1, (100, 500), (140, 500), saved=7, problems=("7 pairs saved for 8 requests",))]},
    }
    results["summary"] = {"fake": summarize(results["rounds"]["fake"])}
    table = write(results, tmp_path)
    assert "| 1 | off, on | 100.0 ms | 140.0 ms | 140.0% | 500 | 500 | 100.0% | 7/8 |" in table
    assert "NOT within the 5% target" in table and "7 pairs saved for 8 requests" in table
    assert (tmp_path / "mirror.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["fake"]["within_target"] is False
    assert render(json.loads((tmp_path / "results.json").read_text())) == table  # --report renders it again


def test_quick_mode_is_small_and_candidates_are_checked() -> None:
    quick = parse_args(["--quick", "--candidates", "fake"])
    assert (quick.rounds, quick.streams, quick.requests_per_stream) == (2, 4, 1) and quick.candidates == ["fake"]
    assert parse_args([]).candidates == ["engine", "fake"]
    with pytest.raises(SystemExit) as exc:
        parse_args(["--candidates", "gpu"])
    assert exc.value.code == 2
