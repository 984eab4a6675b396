"""decision/stats.py, decision/rules.py and decision/votes_source.py: intervals, verdicts, power
estimates, rule files, and reading the gateway's real votes file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from decision.rules import DEFAULT_RULES, load_rules
from decision.stats import (
    mcnemar_items_needed,
    paired_conditions_needed,
    paired_ratio,
    scale_needed,
    t_975,
    verdict,
    votes_needed,
)
from decision.votes_source import describe_target, read_judgements
from gateway.database import open_database
from gateway.errors import ConfigError
from gateway.preference import Judgement
from gateway.votes import ComparisonRecord, Outcome, VoteStore


def test_t_quantiles_from_the_table_and_the_expansion() -> None:
    assert t_975(1) == 12.706 and t_975(10) == 2.228 and t_975(30) == 2.042
    assert t_975(40) == pytest.approx(2.021, abs=1e-3) and t_975(120) == pytest.approx(1.980, abs=1e-3)
    with pytest.raises(ValueError):
        t_975(0)


def test_paired_ratio_is_a_geometric_mean_with_a_t_interval() -> None:
    ratio = paired_ratio([200, 110, 420], [100, 100, 200])
    assert ratio is not None and ratio.n == 3
    logs = [math.log(2), math.log(1.1), math.log(2.1)]
    mean = sum(logs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)
    assert ratio.ratio == pytest.approx(math.exp(mean))
    assert ratio.low == pytest.approx(math.exp(mean - 4.303 * sd / math.sqrt(3)))
    assert verdict(ratio.log_low, ratio.log_high, null=0.0) is None  # 3 noisy points: [0.79, 4.4]
    steady = paired_ratio([150, 152, 149, 151], [100, 100, 100, 100])
    assert steady is not None and verdict(steady.log_low, steady.log_high, null=0.0) == "higher"
    single = paired_ratio([150], [100])
    assert single is not None and single.low is None and verdict(single.log_low, single.log_high, null=0.0) is None
    assert paired_ratio([0], [100]) is None


def test_verdict_needs_the_interval_to_exclude_the_null() -> None:
    assert verdict(0.01, 0.2, null=0.0) == "higher"
    assert verdict(-0.2, -0.01, null=0.0) == "lower"
    assert verdict(-0.01, 0.2, null=0.0) is None
    assert verdict(0.45, 0.7, null=0.5) is None and verdict(0.51, 0.7, null=0.5) == "higher"


def test_power_estimates() -> None:
    # Connor (1987): 20% vs 10% discordant (gap 0.1, discordance 0.3) needs ~234 pairs at 80% power.
    assert mcnemar_items_needed(20, 10, 100) == 234
    assert mcnemar_items_needed(5, 5, 50) is None and mcnemar_items_needed(0, 0, 10) is None
    # 60% against 50%: n = ((1.96 * 0.5 + 0.8416 * sqrt(0.24)) / 0.1)^2 = 194
    assert votes_needed(0.6) == 194 and votes_needed(0.5) is None
    assert paired_conditions_needed(0.1, 0.2) == math.ceil((2.8016 * 2) ** 2)
    assert paired_conditions_needed(0.0, 0.2) is None and paired_conditions_needed(0.1, None) is None
    assert scale_needed(0.1, 0.05) == pytest.approx((2.8016 * 0.5) ** 2, rel=1e-3)


def test_default_rules_load_and_bad_rules_name_the_key(tmp_path: Path) -> None:
    rules = load_rules(DEFAULT_RULES)
    assert rules.candidate == "r1" and rules.incumbent == "qwen" and rules.when_undecided == "keep"
    assert rules.latency_slo is not None and sum(rules.quality_weights.values()) == pytest.approx(1.0)
    bad = tmp_path / "rules.yaml"
    bad.write_text("memory_budget_gib: -1\nlatency_slo: {concurency: 4}\n")
    with pytest.raises(ConfigError, match=r"memory_budget_gib.*latency_slo.concurency: unknown key"):
        load_rules(bad)
    bad.write_text("quality_weights: {math: -0.5}\n")
    with pytest.raises(ConfigError, match="negative weight for math"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


def test_votes_adapter_reads_the_gateways_own_store(tmp_path: Path) -> None:
    path = tmp_path / "votes.sqlite3"
    assert read_judgements(path, "compare") is None  # no store: not the same as no votes
    assert not path.exists()  # and reading did not create one
    store = VoteStore(open_database(path))

    def compared(cid: str, source: str, answers: dict[str, str]) -> None:
        models = {m: Outcome(answer=a, answer_chars=len(a)) for m, a in answers.items()}
        store.save_comparison(ComparisonRecord(id=cid, source=source, models=models))  # type: ignore[arg-type]

    compared("c1", "compare", {"r1": "a long answer", "qwen": "short"})
    compared("c2", "compare", {"r1": "fifteen letters", "qwen": "four"})
    compared("l1", "live", {"r1": "live answer", "qwen": "ok"})
    store.add_vote("c1", left="r1", right="qwen", outcome="left")
    store.add_vote("c2", left="qwen", right="r1", outcome="both_bad")
    store.add_vote("l1", left="qwen", right="r1", outcome="right")
    assert read_judgements(path, "compare") == [
        Judgement("r1", "qwen", "a", len("a long answer"), len("short")),
        Judgement("qwen", "r1", "both_bad", 4, len("fifteen letters")),
    ]
    assert read_judgements(path, "live") == [Judgement("qwen", "r1", "b", 2, len("live answer"))]
    assert describe_target("postgresql://gateway:s3cret@db:5432/gw") == "postgresql://gateway@db:5432/gw"
    assert describe_target(str(path)) == str(path)
