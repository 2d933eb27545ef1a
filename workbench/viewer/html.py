"""HTML views of episodes and runs: per-agent transcripts, counters, notices.

Every piece of text that comes from a run file goes through ``esc`` (``html.escape``), so a
transcript that contains ``<script>`` or ``<img onerror=...>`` shows those characters and runs
nothing. Episodes are read through ``coerce_episode``, so a field of the wrong type shows as a
default instead of raising; very long transcripts are cut (MAX_MESSAGES, MAX_CONTENT) and say so.
The markup is self-contained (one scoped ``<style>``), so the same strings display in
Gradio's ``gr.HTML`` and in a notebook's ``IPython.display.HTML``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from workbench.viewer.figures import display_labels, esc, node_verdicts, role_colour
from workbench.viewer.store import ADVANTAGE, TRAIN_STEP, coerce_episode

MAX_MESSAGES = 400  # messages shown in one transcript (the rest are counted)
MAX_CONTENT = 20_000  # characters of one message shown

STYLE = """<style>
.wb-view {font-family: ui-sans-serif, system-ui, sans-serif; font-size: 14px; color: #111827;}
.wb-view .wb-q {background: #f3f4f6; border-radius: 8px; padding: 8px 12px; margin-bottom: 10px;}
.wb-view .wb-agent {border: 1px solid #e5e7eb; border-left: 6px solid var(--wb-role); border-radius: 8px;
  margin: 0 0 10px 0; padding: 6px 12px; background: #fff;}
.wb-view .wb-agent h4 {margin: 2px 0 6px 0; font-size: 14px; display: flex; gap: 8px; align-items: baseline;}
.wb-view .wb-role {font-weight: normal; color: #6b7280; font-size: 12px;}
.wb-view .wb-msg + .wb-msg {border-top: 1px dashed #e5e7eb; margin-top: 6px; padding-top: 6px;}
.wb-view .wb-meta {color: #6b7280; font-size: 12px;}
.wb-view pre.wb-text {white-space: pre-wrap; word-break: break-word; margin: 4px 0; font-size: 13px;
  font-family: ui-monospace, SFMono-Regular, Menlo, monospace; background: none; padding: 0; border: 0;}
.wb-view .wb-right {color: #15803d; font-weight: 600;} .wb-view .wb-wrong {color: #b91c1c; font-weight: 600;}
.wb-view .wb-none {color: #6b7280;}
.wb-view .wb-cards {display: flex; flex-wrap: wrap; gap: 8px;}
.wb-view .wb-card {border: 1px solid #e5e7eb; border-radius: 8px; padding: 6px 12px; min-width: 110px; background: #fff;}
.wb-view .wb-card b {display: block; font-size: 18px;}
.wb-view .wb-card span {color: #6b7280; font-size: 12px;}
.wb-view .wb-notice {border-radius: 8px; padding: 6px 12px; margin: 4px 0; background: #fef3c7; color: #78350f;}
.wb-view .wb-error {background: #fee2e2; color: #7f1d1d;}
.wb-view .wb-info {background: #e0f2fe; color: #075985;}
.wb-view progress {width: 100%;}
</style>"""


def _verdict_html(v: bool | None, answer: Any) -> str:
    if v is True:
        return f'<span class="wb-right">✓ {esc(answer, 40)}</span>'
    if v is False:
        return f'<span class="wb-wrong">✗ {esc(answer, 40)}</span>'
    if answer is not None:  # an answer without a recorded verdict (a schema-1 run): shown, not judged
        return (
            f'<span class="wb-none" title="no verdict recorded (episode schema 1)">{esc(answer, 40)}</span>'
        )
    return '<span class="wb-none">no answer</span>'


def transcript_html(episode: dict[str, Any] | None) -> str:
    """The question, then one titled box per agent (graph node) holding that agent's messages in order."""
    if episode is None:
        return (
            f'{STYLE}<div class="wb-view"><div class="wb-notice wb-info">No episode to show yet.</div></div>'
        )
    episode, _ = coerce_episode(episode)
    verdict = node_verdicts(episode)
    labels = {
        n["id"]: n for n in (episode.get("graph") or {}).get("nodes", []) if isinstance(n, dict) and "id" in n
    }
    names = display_labels(list(labels.values()))
    by_sender: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in episode["messages"][:MAX_MESSAGES]:
        by_sender[m["sender"]].append(m)
    order = [n for n in labels if n in by_sender] + [s for s in by_sender if s not in labels]
    outcome = (
        '<span class="wb-none">format failure</span>'
        if episode["format_failure"]
        else _verdict_html(bool(episode["correct"]), episode["final_answer"])
    )
    meta = episode.get("meta") if isinstance(episode.get("meta"), dict) else {}
    train = ""
    if meta.get(TRAIN_STEP) is not None:
        adv = meta.get(ADVANTAGE)
        adv_text = f", advantage {adv:+.3f}" if isinstance(adv, int | float) else ""
        train = f' · <span class="wb-meta">step {esc(meta[TRAIN_STEP])}, reward {esc(episode.get("reward"))}{adv_text}</span>'
    u = episode["usage"]
    parts = [
        STYLE,
        '<div class="wb-view wb-transcript">',
        '<div class="wb-q">',
        f'<div class="wb-meta">{esc(episode.get("protocol"))} · {esc(episode.get("task_id"))} · '
        f"{u['calls']} generations, {u['completion_tokens']} completion tokens</div>",
        f'<pre class="wb-text">{esc(episode.get("question"))}</pre>',
        f"gold <b>{esc(episode.get('gold'))}</b> · final answer {outcome}{train}",
        "</div>",
    ]
    for sender in order:
        node = labels.get(sender, {})
        role = str(node.get("role") or by_sender[sender][0].get("role") or "agent")
        label = names.get(sender, sender)
        last = next((m for m in reversed(by_sender[sender]) if m.get("extracted") is not None), None)
        head = _verdict_html(verdict.get(sender), last["extracted"] if last else None)
        parts.append(
            f'<section class="wb-agent" data-node="{esc(sender)}" style="--wb-role: {role_colour(role)}">'
            f'<h4><span>{esc(label)}</span><span class="wb-role">{esc(role)}{"" if label == sender else " · " + esc(sender)}</span>'
            f"<span>{head}</span></h4>"
        )
        for m in by_sender[sender]:
            to = ", ".join(str(r) for r in m.get("receivers", []))
            finish = f" · {esc(m['finish_reason'])}" if m.get("finish_reason") else ""
            parts.append(
                '<div class="wb-msg">'
                f'<div class="wb-meta">round {esc(m.get("round"))} → {esc(to)} · '
                f"{esc(m.get('completion_tokens'))} tokens{finish}</div>"
                f'<pre class="wb-text">{esc(m.get("content"), MAX_CONTENT)}</pre></div>'
            )
        parts.append("</section>")
    if not by_sender:
        parts.append('<div class="wb-notice">This episode has no messages.</div>')
    if len(episode["messages"]) > MAX_MESSAGES:
        parts.append(
            f'<div class="wb-notice">… and {len(episode["messages"]) - MAX_MESSAGES} more messages, not shown.</div>'
        )
    parts.append("</div>")
    return "".join(parts)


def counters_html(c: dict[str, Any], status: str | None = None) -> str:
    """Cards: episodes done (of planned), running accuracy with its 95% CI, format failures, budget."""
    done = f"{c['n']}" + (f" / {c['planned']}" if c.get("planned") else "")
    acc = "–" if c["accuracy"] is None else f"{c['accuracy']:.3f}"
    lo, hi = c["ci95"]
    cards = [
        (done, "episodes" + (f" · {esc(status)}" if status else "")),
        (acc, f"accuracy [{lo:.2f}, {hi:.2f}]"),
        (str(c["format_failures"]), "format failures"),
        (f"{c['calls_per_query']:.1f}", "generations / query"),
        (f"{c['tokens_per_query']:.0f}", "completion tokens / query"),
        (f"{c['completion_tokens']:,}", "completion tokens in all"),
    ]
    if "train" in c:
        t = c["train"]
        cards.append((str(t["step"]), f"training step ({t['episodes_at_step']} episodes)"))
        cards.append((f"{t['mean_reward']:.3f}", "mean reward at this step"))
    body = "".join(f'<div class="wb-card"><b>{v}</b><span>{label}</span></div>' for v, label in cards)
    progress = ""
    if c.get("planned"):
        progress = (
            f'<progress max="{int(c["planned"])}" value="{min(int(c["n"]), int(c["planned"]))}"></progress>'
        )
    return f'{STYLE}<div class="wb-view"><div class="wb-cards">{body}</div>{progress}</div>'


def notices_html(problems: list[str], kind: str = "notice") -> str:
    """Problems (skipped lines, missing files) as escaped notices; empty string when there are none."""
    if not problems:
        return ""
    cls = {"notice": "wb-notice", "error": "wb-notice wb-error", "info": "wb-notice wb-info"}[kind]
    shown = problems[:20]
    more = f'<div class="wb-meta">… and {len(problems) - 20} more</div>' if len(problems) > 20 else ""
    items = "".join(f'<div class="{cls}">{esc(p, 400)}</div>' for p in shown)
    return f'{STYLE}<div class="wb-view">{items}{more}</div>'
