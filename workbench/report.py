"""Plain-text views of runs, shared by the CLI and the notebooks."""

from __future__ import annotations

from typing import Any


def format_table(summaries: list[dict[str, Any]]) -> str:
    """A results table from run summaries: accuracy with its 95% CI and the budget per query."""
    header = ("protocol", "task", "n", "accuracy [95% CI]", "gens/q", "tokens/q", "wall s/q", "fmt fail")
    rows = [
        (
            s["protocol"],
            s["task"],
            str(s["n"]),
            f"{s['accuracy']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]",
            f"{s['calls_per_query']:g}",
            f"{s['completion_tokens_per_query']:.0f}",
            f"{s['wall_s_per_query']:.2f}",
            str(s["format_failures"]),
        )
        for s in summaries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    )


def transcript(episode: dict[str, Any]) -> str:
    """One episode as text: the question, each message under its sender, the outcome."""
    verdict = (
        "format failure" if episode["format_failure"] else ("correct" if episode["correct"] else "wrong")
    )
    lines = [
        f"[{episode['protocol']}] {episode['task_id']}",
        f"Q: {episode['question']}",
        f"gold: {episode['gold']}",
        "",
    ]
    for m in episode["messages"]:
        to = ", ".join(m["receivers"])
        extracted = f"  (answer: {m['extracted']})" if m.get("extracted") is not None else ""
        lines.append(
            f"--- {m['sender']} -> {to}  [round {m['round']}, {m['completion_tokens']} tokens]{extracted}"
        )
        lines.append(m["content"].strip())
    u = episode["usage"]
    lines += [
        "",
        f"final answer: {episode['final_answer']}  ({verdict})",
        f"usage: {u['calls']} generations, {u['prompt_tokens']} prompt + {u['completion_tokens']} completion tokens",
    ]
    return "\n".join(lines)
