"""The `workbench` command: every notebook step can also run headless.

workbench demo [--no-app]                       a small live comparison on the embedded model
workbench eval --task T --protocol P [...]      one run folder under runs/
workbench compare --task T --protocols a,b,c    protocols on the same items at matched budgets
workbench serve --model M [--port 8000]         the model as an OpenAI-compatible endpoint
workbench app [--runs DIR] [--port 7860]        the viewer: live topologies and transcripts
workbench analyze RUN [RUN ...]                 diversity, coverage, credit: analysis.json + figures
workbench train --recipe R [--set k=v ...]      RL on the coordinating role (maestro|leader|conductor)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from workbench.config import ConfigError, parse_overrides
from workbench.protocols import PROTOCOLS
from workbench.report import format_table
from workbench.run_config import apply_flags
from workbench.runs import default_root

DEMO_ITEMS = 24
DEMO_DTYPE = "fp32"  # see cmd_demo


def _user_errors() -> tuple[type[Exception], ...]:
    from workbench.models import ModelLoadError
    from workbench.runs import RunDirError
    from workbench.tasks import TaskError

    return ConfigError, TaskError, ModelLoadError, RunDirError


def _check_range(flag: str, value: int, lo: int, hi: int) -> None:
    """A numeric flag outside lo..hi is a one-line ConfigError naming the flag and the range."""
    if not lo <= value <= hi:
        raise ConfigError(f"{flag} must be in {lo}..{hi}, got {value}")


def _one_line(message: object, limit: int = 2000) -> str:
    """An error message as one line (control characters escaped), at most ``limit`` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    # a streaming backend: rows in its running batch per decode step; otherwise requests per call
    batch = s.get("mean_rows_per_step", s["mean_batch_size"])
    print(
        f"\nrun folder: {result.run_dir}  ({s['usage']['completion_tokens']} completion tokens in "
        f"{s['usage']['wall_s']:.1f}s, {s['completion_tokens_per_s']} tokens/s, mean batch {batch})"
    )
    for e in s["errors"]:
        print(f"workbench: episode {e['task_id']} failed: {e['error']}", file=sys.stderr)
    return 1 if s["errors"] and not s["n"] else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Single agent vs self-consistency on fresh arithmetic, on the embedded model, same items."""
    from workbench.evaluate import EvalConfig, run_eval
    from workbench.models import load_backend
    from workbench.stats import paired_outcomes

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
        f"workbench demo: {args.limit} arithmetic items (test split, 1-digit +/-), model {args.model} ({DEMO_DTYPE})",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    # fp32, not the bf16 default: greedy bf16 output differs between CPUs (their bf16 kernels round
    # differently), so the README's numbers would not be what a newcomer's machine prints
    backend = load_backend(args.model, max_batch_size=64, dtype=DEMO_DTYPE)
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
        from workbench.viewer import load_app

        load_app().serve(root)  # prints the URL, serves until Ctrl-C
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    """The viewer (Live, Runs, Compare, Launch) on a runs root until Ctrl-C (docs/viewer.md)."""
    from workbench.viewer import load_app

    root = Path(args.runs) if args.runs else default_root()
    if args.runs and not root.is_dir():
        raise ConfigError(f"--runs {args.runs}: no such folder; pass the folder that holds your run folders")
    load_app().serve(root, args.host, args.port)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a workbench model over HTTP until Ctrl-C (see workbench/serve.py)."""
    from workbench.serve import serve

    return serve(  # checks the port, host and limits (one-line errors) before the model loads
        args.model,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        dtype=args.dtype,
        device=args.device,
        served_model_name=args.served_model_name,
        verbose=args.verbose,
        max_connections=args.max_connections,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout,
        allow_hosts=args.allow_host or (),
        api_key=args.api_key,
    )


def cmd_compare(args: argparse.Namespace) -> int:
    """Several protocols on the same items at matched budgets (see workbench/compare.py)."""
    from workbench.compare import CompareConfig, run_compare

    cmp = CompareConfig.build(
        parse_overrides(args.set or []),
        task=args.task,
        protocols=args.protocols,
        model=args.model,
        limit=args.limit,
        split=args.split,
        match=args.match,
        reference=args.reference,
        seeds=args.seeds,
        out=args.out,
    )
    result = run_compare(cmp, runs_root=args.runs, resume=args.resume)
    print(result.table)
    print(f"\ncomparison folder: {result.out}  (comparison.json, one run folder per protocol and seed)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """RL training of a coordinating role (see workbench/rl/trainer.py)."""
    from workbench.rl.config import TrainConfig
    from workbench.rl.trainer import train

    if args.resume:
        if args.set or args.out:
            raise ConfigError("--resume continues a run with its own config.yaml; drop --set/--out")
        result = train(resume=args.resume, allow_config_change=args.allow_config_change)
    elif args.allow_config_change:
        raise ConfigError("--allow-config-change goes with --resume RUN_DIR")
    else:
        overrides = apply_flags(parse_overrides(args.set or []), {"out": ("--out", args.out)})
        result = train(TrainConfig.load(args.recipe, overrides), runs_root=args.runs)
    s = result.summary
    b, a, p = s["before"], s["after"], s["after_vs_before"]
    print(
        f"{s['recipe']} ({s['objective']}, {s['rollout']} rollouts, {s['steps']} steps) on {a['split']}, "
        f"{a['n']} items, {a['generations_per_query']} generations/query:\n"
        f"  before {b['accuracy']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]  "
        f"after {a['accuracy']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]  "
        f"(right only after: {p['only_a_right']}, only before: {p['only_b_right']}, McNemar p={p['mcnemar_p']})"
    )
    if s.get("no_signal"):
        print(f"  note: {s['no_signal']}")
    print(f"run folder: {result.run_dir}\nserve it:   {s['serve']}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Diversity, coverage/identification, credit and more for run folders (workbench/analysis/analyze.py)."""
    from workbench.analysis.analyze import AnalyzeOptions, analyze, summary_table

    for flag, value, lo, hi in (
        ("--replay", args.replay, 0, 100_000),
        ("--rationale", args.rationale, 0, 100_000),
        ("--max-exact", args.max_exact, 0, 12),  # exact Shapley visits 2**agents coalitions
        ("--permutations", args.permutations, 1, 100_000),
        ("--max-batch-size", args.max_batch_size, 1, 4096),
    ):
        _check_range(flag, value, lo, hi)
    for run in args.runs:  # before any model loads for --replay/--rationale
        if not (Path(run) / "episodes.jsonl").is_file():
            raise ConfigError(
                f"{run}: not a run folder (no episodes.jsonl); pass folders written by eval/compare"
            )
    opts = AnalyzeOptions(
        embed=not args.no_embed,
        embed_model=args.embed_model,
        replay_limit=args.replay,
        rationale_limit=args.rationale,
        max_exact=args.max_exact,
        permutations=args.permutations,
        png=not args.no_png,
    )
    backend = None
    if args.replay > 0 or args.rationale > 0:
        from workbench.models import load_backend

        backend = load_backend(args.model, max_batch_size=args.max_batch_size)
    result = analyze(args.runs, out=args.out or None, options=opts, backend=backend)
    print(summary_table(result))
    for a in result["runs"]:
        cr = a.get("credit")
        if cr:
            shares = ", ".join(f"{p['agent']} {p['shapley']['mean']:+.3f}" for p in cr["per_agent"])
            print(f"credit {a['protocol']}: {shares} ({cr['episodes']} episodes, {cr['evaluations']} values)")
    for msg in result["problems"]:
        print(f"workbench analyze: {msg}", file=sys.stderr)
    where = f"; comparison in {result['comparison_dir']}" if "comparison_dir" in result else ""
    print(f"\nwrote analysis.json and analysis.html into each run{where}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block), exit status 2."""

    def error(self, message: str):  # noqa: ANN201 (argparse's signature; never returns)
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbench", description="Multi-agent LLM collaboration workbench")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="run a protocol on a task and write a run folder")
    e.add_argument(
        "--task",
        default=None,
        help="arithmetic | gsm8k | math500 | amc23 | aime24 | bbh[:SUBTASK] | mmlu[:stem|:SUBJECT] | svamp | "
        "mawps | gpqa[:main|:extended] | jsonl:PATH | mix:TASK,TASK,... (default: arithmetic; see docs/tasks.md)",
    )
    e.add_argument("--protocol", default=None, help=f"{' | '.join(PROTOCOLS)} (default: single)")
    e.add_argument(
        "--model",
        default=None,
        help="smollm2 | org/name | local path, optionally +ADAPTER_DIR | openai:URL#MODEL | vllm:MODEL "
        "(see docs/backends.md)",
    )
    e.add_argument("--limit", type=int, default=None, help="number of items (default: 8)")
    e.add_argument("--split", default=None, help="train | dev | test (default: test; tune on dev)")
    e.add_argument(
        "--seed",
        type=int,
        default=None,
        help="sampling seed (default: 0); the items stay the same (task.seed picks other arithmetic items)",
    )
    e.add_argument("--out", default=None, help="run folder (default: runs/<time>-<task>-<protocol>)")
    e.add_argument(
        "--runs", default=None, help="root folder for runs without --out (default: runs/ in the checkout)"
    )
    _add_set(
        e,
        "override any config key, e.g. protocol.n=9 task.digits=2 model.dtype=fp32 team.calc.tool=calculator "
        "(a key that a flag also sets is an error)",
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

    c = sub.add_parser("compare", help="several protocols on the same items at matched budgets")
    c.add_argument("--task", default=None, help="task name, as for eval (default: arithmetic)")
    c.add_argument(
        "--protocols",
        default=None,
        help="comma-separated PROTOCOL or PROTOCOL@VARIANT entries, e.g. single,conductor@trained,conductor@base "
        "(options per entry: --set options.ENTRY.KEY=VALUE; default: single,vote,maestro)",
    )
    c.add_argument("--model", default=None, help="model spec, as for eval (default: smollm2)")
    c.add_argument("--limit", type=int, default=None, help="items (default: 8)")
    c.add_argument("--split", default=None, help="train | dev | test (default: test)")
    c.add_argument(
        "--match",
        default=None,
        help="generations | tokens | none: what the budgets are matched in (default: generations)",
    )
    c.add_argument(
        "--reference", default=None, help="entry the others match (default: maestro, else the largest)"
    )
    c.add_argument("--seeds", default=None, help="comma-separated sampling seeds (default: 0)")
    c.add_argument("--out", default=None, help="comparison folder (default: runs/<time>-compare-<task>)")
    c.add_argument("--runs", default=None, help="root folder without --out (default: runs/ in the checkout)")
    c.add_argument(
        "--resume",
        action="store_true",
        help="continue the comparison in --out: reuse its finished runs (same config), rerun the rest",
    )
    _add_set(
        c,
        "e.g. options.maestro.rounds=3 tolerance=0.1 pilot_items=16 task.digits=2 team.NAME.KEY=VALUE "
        "(task, model, models, team, budget keys as for eval)",
    )
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("serve", help="serve a model as an OpenAI-compatible endpoint (/v1/chat/completions)")
    s.add_argument(
        "--model", default="smollm2", help="smollm2 | org/name | local path, optionally +ADAPTER_DIR"
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; ::1 for IPv6)")
    s.add_argument("--port", default="8000", help="port 0-65535 (default: 8000; 0 picks a free one)")
    s.add_argument(
        "--max-batch-size", type=int, default=64, help="rows decoded together per forward pass (default: 64)"
    )
    s.add_argument("--dtype", default="auto", help="auto | bf16 | fp32 | fp16 (default: auto)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    s.add_argument(
        "--served-model-name", default="", help="the name clients put in 'model' (default: the --model value)"
    )
    s.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (default: $WORKBENCH_SERVE_API_KEY; unset = no key)",
    )
    s.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME",
        help="also accept this Host / Origin (repeatable; '*' = any); localhost and the bound host always",
    )
    s.add_argument("--max-connections", type=int, default=512, help="open connections at once (default: 512)")
    s.add_argument("--max-queue", type=int, default=256, help="requests waiting for the model (default: 256)")
    s.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds for a request to arrive (default: 10)"
    )
    s.add_argument("--verbose", action="store_true", help="log every HTTP request")
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser("train", help="RL training of the coordinating role (maestro | leader | conductor)")
    t.add_argument(
        "--recipe", default="maestro", help="maestro | leader | conductor | PATH.yaml (default: maestro)"
    )
    t.add_argument("--out", default=None, help="run folder (default: runs/<time>-train-<recipe>)")
    t.add_argument("--runs", default=None, help="root folder without --out (default: runs/ in the checkout)")
    t.add_argument(
        "--resume", default="", metavar="RUN_DIR", help="continue a run from its latest checkpoint"
    )
    t.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: apply an edited config.yaml (lr, steps, ...) instead of refusing it",
    )
    _add_set(
        t,
        "e.g. train.steps=20 train.objective=grpo train.lr=5e-5 task.limit=256 eval.limit=50 "
        "team.NAME.KEY=VALUE (task, model, models, team keys as for eval)",
    )
    t.set_defaults(func=cmd_train)

    a = sub.add_parser("app", help="the viewer: live topologies and transcripts of runs (Gradio)")
    a.add_argument("--runs", default=None, help="runs root to show (default: runs/ in the checkout)")
    a.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; any other asks for a login token)",
    )
    a.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    a.set_defaults(func=cmd_app)

    y = sub.add_parser("analyze", help="diversity, coverage/identification and credit of run folders")
    y.add_argument("runs", nargs="+", help="run folders (several: also a comparison)")
    y.add_argument("--out", default="", help="comparison folder (default: <common parent>/analysis)")
    y.add_argument("--no-embed", action="store_true", help="skip semantic diversity (no embedding model)")
    y.add_argument(
        "--embed-model",
        default="bundled",
        help="bundled (offline all-MiniLM-L6-v2) | a sentence-transformers name",
    )
    y.add_argument(
        "--replay", type=int, default=0, metavar="N",
        help="credit by replaying the synthesiser (maestro, leader, moa) on N episodes per run with --model",
    )  # fmt: skip
    y.add_argument(
        "--rationale", type=int, default=0, metavar="N", help="decision vs rationale on N maestro slates"
    )
    y.add_argument("--model", default="smollm2", help="model for --replay/--rationale (default: smollm2)")
    y.add_argument("--max-batch-size", type=int, default=64, help="rows decoded together (default: 64)")
    y.add_argument(
        "--max-exact", type=int, default=5, help="exact Shapley up to this many agents (default: 5)"
    )
    y.add_argument("--permutations", type=int, default=64, help="sampled permutations beyond (default: 64)")
    y.add_argument("--no-png", action="store_true", help="HTML figures only")
    y.set_defaults(func=cmd_analyze)
    return p


def _add_set(parser, help_text: str) -> None:
    """``--set KEY=VALUE ...``: the config overrides every subcommand that runs a config takes."""
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help=help_text)


# Warnings from transformers/torch about their own internals (e.g. "`past_key_values` is deprecated"
# printed through the progress bar): a user of the command cannot act on them.
QUIET_WARNINGS = (r".*past_key_values.*", r".*is_gradient_checkpointing.*")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
    # the same deprecation through transformers' logger (the training path's forward passes)
    logging.getLogger("transformers.utils.generic").addFilter(
        lambda record: "past_key_values" not in record.getMessage()
    )
    # Ctrl-C and the viewer's Cancel are SIGINT: keep the episodes so far, write the summary, stop.
    # A process started in the background by a non-interactive shell (`cmd &`, nohup, some CI
    # runners) inherits SIGINT *ignored*, and Python then installs no handler: cancel would do
    # nothing. Restore the handler.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGTERM (Slurm, docker stop, kill) is handled like Ctrl-C: summary written, exit 143 (128 + 15)
    from workbench.runs import Terminated

    def _on_sigterm(signum, frame):
        raise Terminated()

    in_main_thread = threading.current_thread() is threading.main_thread()  # signal.signal needs it
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"workbench: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"workbench: {what}; episodes written so far are kept", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if in_main_thread:  # main() called in-process (tests, notebooks) leaves the handler as it was
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
