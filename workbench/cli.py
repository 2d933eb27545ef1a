"""The `workbench` command: every notebook step can also run headless.

workbench demo [--no-app]                       a small live comparison on the embedded model
workbench eval --task T --protocol P [...]      one run folder under runs/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from workbench.config import ConfigError, parse_overrides
from workbench.report import format_table
from workbench.runs import default_root

DEMO_ITEMS = 24


def _user_errors() -> tuple[type[Exception], ...]:
    from workbench.models import ModelLoadError
    from workbench.runs import RunDirError
    from workbench.tasks import TaskError

    return ConfigError, TaskError, ModelLoadError, RunDirError


def cmd_eval(args: argparse.Namespace) -> int:
    from workbench.evaluate import EvalConfig, prepare, run_eval

    cfg = EvalConfig.build(
        parse_overrides(args.set or []),
        task=args.task,
        protocol=args.protocol,
        model=args.model,
        limit=args.limit,
        split=args.split,
        seed=args.seed,
        out=args.out,
    )
    tasks = prepare(cfg)
    for msg in tasks.skipped:
        print(f"workbench: skipped {msg}", file=sys.stderr)
    result = run_eval(cfg, tasks=tasks, runs_root=args.runs)
    s = result.summary
    print(format_table([s]))
    print(
        f"\nrun folder: {result.run_dir}  ({s['usage']['completion_tokens']} completion tokens in "
        f"{s['usage']['wall_s']:.1f}s, {s['completion_tokens_per_s']} tokens/s, mean batch {s['mean_batch_size']})"
    )
    for e in s["errors"]:
        print(f"workbench: episode {e['task_id']} failed: {e['error']}", file=sys.stderr)
    return 1 if s["errors"] and not s["n"] else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Single agent vs self-consistency on fresh arithmetic, on the embedded model, same items."""
    from workbench.analysis.stats import paired_outcomes
    from workbench.evaluate import EvalConfig, run_eval
    from workbench.models import load_backend

    root = (Path(args.runs) if args.runs else default_root()) / f"{time.strftime('%Y%m%d-%H%M%S')}-demo"
    configs = [
        EvalConfig.build(
            task="arithmetic", protocol="single", model=args.model, limit=args.limit, out=str(root / "single")
        ),
        EvalConfig.build(
            {"protocol": {"n": 5}},
            task="arithmetic",
            protocol="vote",
            model=args.model,
            limit=args.limit,
            out=str(root / "vote"),
        ),
    ]
    print(
        f"workbench demo: {args.limit} arithmetic items (test split, 1-digit +/-), model {args.model}",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    backend = load_backend(args.model, max_batch_size=64)
    print(f"model loaded in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    single, vote = (run_eval(cfg, backend=backend) for cfg in configs)
    paired = paired_outcomes([e.to_dict() for e in single.episodes], [e.to_dict() for e in vote.episodes])
    print()
    print(format_table([single.summary, vote.summary]))
    print(
        f"\nSame {paired['n_paired']} items: only single right on {paired['only_a_right']}, only vote right on "
        f"{paired['only_b_right']} (exact McNemar p = {paired['mcnemar_p']})."
    )
    print("Budgets are not matched here: vote spends 5 generations per query, single 1.")
    print(f"Run folders: {single.run_dir}, {vote.run_dir}  (episodes.jsonl, summary.json, config.yaml)")
    if not args.no_app:
        print("The live viewer is not part of this release yet; the demo runs headless.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description="Multi-agent LLM collaboration workbench")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="run a protocol on a task and write a run folder")
    e.add_argument(
        "--task", default="arithmetic", help="arithmetic | gsm8k | jsonl:PATH (default: arithmetic)"
    )
    e.add_argument("--protocol", default="single", help="single | vote (default: single)")
    e.add_argument(
        "--model", default="smollm2", help="smollm2 | org/name | local path, optionally +ADAPTER_DIR"
    )
    e.add_argument("--limit", type=int, default=8, help="number of items (default: 8)")
    e.add_argument("--split", default="test", help="train | dev | test (default: test; tune on dev)")
    e.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed (default: 0); the items stay the same (task.seed picks other arithmetic items)",
    )
    e.add_argument("--out", default="", help="run folder (default: runs/<time>-<task>-<protocol>)")
    e.add_argument(
        "--runs", default=None, help="root folder for runs without --out (default: runs/ in the checkout)"
    )
    e.add_argument(
        "--set",
        nargs="*",
        metavar="KEY=VALUE",
        help="override any config key, e.g. protocol.n=9 task.digits=2 model.dtype=fp32",
    )
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="a small live comparison on the embedded model")
    d.add_argument("--no-app", action="store_true", help="stay headless (do not start the viewer)")
    d.add_argument(
        "--limit", type=int, default=DEMO_ITEMS, help=f"items per protocol (default: {DEMO_ITEMS})"
    )
    d.add_argument("--model", default="smollm2", help="model spec (default: the embedded smollm2)")
    d.add_argument(
        "--runs", default=None, help="root folder for the demo's runs (default: runs/ in the checkout)"
    )
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted; episodes written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
