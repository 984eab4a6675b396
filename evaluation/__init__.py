"""Answer-quality evaluation through the gateway: math, code and logic suites with honest statistics.

    python scripts/eval.py --limit 20                       # every model the gateway lists, every suite
    python scripts/eval.py --suites math,smoke --models r1,qwen --out results/eval/try1

Modules, one job each:
    items       Item (one question) and Grade (one verdict)
    suites      the suite registry; suite_code / suite_math / suite_logic / suite_smoke build items
    syllogisms  seeded three-way syllogisms whose answer may be "cannot be determined"
    prompting   per-model prompt and sampling policy, read from the gateway's /v1/models
    extract     reasoning removal and answer extraction (\\boxed{}, ####, final number, code blocks)
    sandbox     runs generated code in a confined process and judges it from outside
                (sandbox_harness runs inside it, sandbox_confine is its namespaces, seccomp and
                Landlock, sandbox_checker runs the test here, sandbox_codec carries the data)
    grading     turns one model output into a Grade for an item
    runner      concurrent requests through the gateway, one record per answer
    records     the resumable per-answer JSONL file
    stats       Wilson and bootstrap intervals, paired difference, McNemar, pass@k
    summary     records -> the numbers (summary.json)
    report      summary -> report.md and accuracy.png
"""
