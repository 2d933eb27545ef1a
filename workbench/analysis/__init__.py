"""Analysis of runs: why a team wins or loses (docs/analysis.md).

``workbench analyze RUN [RUN ...]`` (analyze.py) writes analysis.json and figures into each run:
diversity of the explored pool (diversity.py), coverage and identification (coverage.py), per-agent
Shapley / leave-one-out credit by counterfactual replay (credit.py, replay.py), conductor workflows
(conductor.py), decision vs rationale (rationale.py), with the statistics of workbench/stats.py (re-exported as analysis.stats). Every
analysis reads episodes through pools.py.
"""
