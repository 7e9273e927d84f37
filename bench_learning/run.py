"""The learning benchmark (issue 3): four methods, same cases, same seeds, one run.

    python -m bench_learning.run [--quick] [--cases FILE] [--out DIR] [--workers N]

Protocol, per (task, seed) lineage (phase A is shared by every shift case of that lineage):
  A. the initial model drives the robot on the nominal dynamics (L0 + L1 on, as deployed);
     its experience goes to a fresh store and one consolidation round runs (per method);
  B. per (shift, magnitude): the phase-A model drives on the shifted dynamics (shift at t=0),
     then one more round: `naive` trains on the new rows only; `full` also replays L3 and
     meta-learns L0/L1, and the gate checks nominal and the shift;
  then every method is measured on the same seeded episodes:
    * recovery: nominal, shift at `recovery.shift_s` -> pre_shift_cost, recovery_ticks
      (nestor_core.learning_metrics.recovery_ticks), post_shift_cost_100;
    * first contact: shifted from t=0 with L0 and L1 frozen (the slow weights alone), mean
      cost, and its ratio to the initial model's;
    * forgetting: mean nominal cost after the phase-B round vs after the phase-A round, as
      deployed (L0/L1 on) and with the slow weights alone (L0/L1 frozen).
frozen, l0_delta (today's single-step delta rule with its default step sizes, L1 off) and rls
(classic adaptive control: recursive least squares with forgetting on [1, q], nestor_core.rls, in
place of L0/L1) never consolidate: their model is the initial one throughout, so their
forgetting is 0 by construction (recorded as 0.0, not measured).

Yardsticks (issue 9): every shifted episode has a paired control, the same model, seed and
episode without the shift; recovery_ticks_paired, post_ratio_paired (windows after the shift)
and late_ratio_paired compare the two tick by tick. The old self-relative band metric is kept as
recovery_ticks. A run whose cost is non-finite or 1000x its control's peak is flagged blew_up
and left out of the summary means (counted instead). The consolidating methods are
the `methods` of the cases YAML (naive and full are required; more entries are ablation
variants): each entry holds ConsolidationConfig overrides and optionally `runtime:` with
RuntimeConfig fields for the robot side (e.g. l1_step_scale: 0).

Everything runs in-process: real PyBullet, real onnxruntime through the robot's PolicyRuntime,
real torch rounds (cloud_brain.learning.consolidation.run_round) on real SQLite stores. Lineages run in
a pool of `workers` processes (one torch thread each).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import pathlib
import shutil
import sys
import tempfile
import time

from bench_learning.cases import FIXED, METHODS, REPO, Case, load_cases
from bench_learning.lineage import RLS_FORGETTING, run_lineage
from bench_learning.report import markdown, plots
from bench_learning.summary import TARGETS, summarise, verdicts

__all__ = [
    "FIXED",
    "METHODS",
    "REPO",
    "RLS_FORGETTING",
    "TARGETS",
    "Case",
    "load_cases",
    "main",
    "markdown",
    "plots",
    "run_lineage",
    "summarise",
    "verdicts",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use config/bench_learning/cases_quick.yaml")
    parser.add_argument("--cases", default=None, help="cases YAML (default: cases.yaml or cases_quick.yaml)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-learning"), help="output directory")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: from the YAML)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds to run instead of the YAML's (e.g. 0)")
    args = parser.parse_args(argv)
    cases_file = args.cases or str(
        REPO / "config" / "bench_learning" / ("cases_quick.yaml" if args.quick else "cases.yaml")
    )
    plan = load_cases(cases_file)
    if args.seeds is not None:
        try:
            plan["seeds"] = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
        if not plan["seeds"]:
            parser.error("--seeds: no seed given")
    workers = args.workers or int(plan["workers"])
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="bench-learning-")
    jobs = []
    for task_file in dict.fromkeys(c.task_file for c in plan["cases"]):
        for seed in plan["seeds"]:
            cases = [c for c in plan["cases"] if c.task_file == task_file]
            jobs.append(
                (task_file, int(seed), cases, {k: plan[k] for k in ("protocol", "consolidation", "methods")}, workdir)
            )
    # Crane lineages are the slowest; start them first so the pool ends together.
    jobs.sort(key=lambda j: "crane" not in j[0])
    methods = plan["method_names"]
    print(
        f"bench-learning: {len(plan['cases'])} cases x {len(plan['seeds'])} seeds x {len(methods)} methods, "
        f"{len(jobs)} lineages on {workers} workers",
        flush=True,
    )
    try:
        if workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = pool.map(run_lineage, jobs, chunksize=1)
        else:
            results = [run_lineage(job) for job in jobs]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    records = [r for lineage in results for r in lineage]
    rows, targets = summarise(records, methods)
    meta = {
        "cases_file": str(pathlib.Path(cases_file).relative_to(REPO))
        if cases_file.startswith(str(REPO))
        else cases_file,
        "seeds": plan["seeds"],
        "records": len(records),
        "workers": workers,
        "wall_seconds": time.time() - started,
        "targets": TARGETS,
        "methods": methods,
        "protocol": plan["protocol"],
        "consolidation": plan["consolidation"],
        "method_overrides": plan["methods"],
    }
    (out / "results.json").write_text(
        json.dumps(
            {"meta": meta, "targets": targets, "summary": rows, "records": copy.deepcopy(records)},
            indent=1,
            default=str,
        )
    )
    text = markdown(rows, targets, meta)
    (out / "summary.md").write_text(text)
    written = plots(records, out, methods)
    print(text)
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'}, {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
