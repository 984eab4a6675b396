"""The replace-or-keep report (`make report`, scripts/report.py).

Modules: `inputs` (find and read bench/eval runs and the deployment), `votes_source` (the one
reader of the gateway's vote store), `rules` (the decision rules file), `stats` (paired ratios,
verdicts, power), one module per section (`deployment`, `resources`, `speed`, `quality`,
`preference_section`, `recommend` for the summary and the decision), `plots`, `sources` (copies of
the files figures come from), `document` with `render_md` / `render_html`, and `build`, which
puts them together. The gateway serves the result through gateway/report_page.py.
"""
