"""Benchmarks that produce records (suite.py and what it uses) and a layer that renders them
(report.py). Entry points: scripts/bench.py (`make bench`) and scripts/bench_gateway.py."""
