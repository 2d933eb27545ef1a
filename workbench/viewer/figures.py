"""Plotly figures of episodes and runs, shared by the Gradio viewer and the notebooks.

``topology_figure(episode)`` draws an episode's communication graph: the ``task`` node on the left
(source), the ``answer`` node on the right (sink), agents in between in layers, each a marker
coloured by role (or by advantage, for training episodes) with a green/red ring for a right/wrong
answer; every edge is a directed curve coloured by its round (one legend entry per round, click to
hide a round). The layout needs nothing but the graph schema, so it works for any protocol:

  * layer = longest path from the sources over the edges taken in round order, skipping each edge
    that would close a cycle (agents that talk back and forth across rounds reuse their nodes), so
    earlier rounds decide the order; the task first, the answer alone in the last layer;
  * within a layer, nodes are ordered by the mean position of their predecessors (fewer crossings),
    ties in order of appearance;
  * edges that do not go one layer forward (back edges, edges inside a layer, several rounds between
    the same pair) are bent, each by a different amount, so none hides another.

All text that comes from a run (labels, answers, message excerpts) is HTML-escaped: Plotly renders
a few tags in text, and model output must show as text. Every function that takes an episode reads
it through ``coerce_episode`` (fields of the wrong type become defaults), so no episode dict makes
a figure raise; a graph larger than MAX_NODES / MAX_EDGES is named, not drawn.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from typing import Any

import plotly.graph_objects as go

from workbench.viewer.store import ADVANTAGE, NODE_ADVANTAGE, TRAIN_STEP, coerce_episode

TASK, ANSWER = "task", "answer"
ROLE_COLOURS = {
    "task": "#6b7280",
    "answer": "#111827",
    "agent": "#2563eb",
    "sampler": "#0891b2",
    "aggregator": "#9333ea",
    "leader": "#d97706",
    "central": "#d97706",
    "conductor": "#db2777",
    "worker": "#059669",
    "proposer": "#0d9488",
    "debater": "#4f46e5",
    "judge": "#b45309",
}
OTHER_ROLE_COLOURS = ("#64748b", "#a16207", "#be123c", "#15803d", "#7c3aed", "#0369a1")
ROUND_COLOURS = ("#94a3b8", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16")
RIGHT, WRONG, NO_ANSWER = "#16a34a", "#dc2626", "#cbd5e1"
X_STEP, Y_STEP = 1.6, 1.0  # data units between layers and between nodes of a layer
MAX_NODES, MAX_EDGES = 400, 2000  # larger graphs are not drawn (the layout is quadratic in the edges)


def esc(text: Any, limit: int | None = None) -> str:
    """Untrusted text made safe for Plotly labels and HTML: truncated, then escaped."""
    s = "" if text is None else str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=True)


def role_colour(role: str) -> str:
    if role in ROLE_COLOURS:
        return ROLE_COLOURS[role]
    return OTHER_ROLE_COLOURS[sum(map(ord, role)) % len(OTHER_ROLE_COLOURS)]


def node_verdicts(episode: dict[str, Any]) -> dict[str, bool | None]:
    """Per graph node: True/False when its last message that carries an answer has a recorded
    verdict, else None. The verdicts are the task verifier's, recorded in the episode
    (``message["correct"]``, schema 2); a schema-1 episode has them only where its protocol recorded
    them (maestro's slates, the leader's round summaries: ``analysis.pools.message_verdicts``).
    The viewer never judges an answer itself. The answer node takes the episode's verdict."""
    from workbench.analysis.pools import message_verdicts

    episode, _ = coerce_episode(episode)
    recorded = message_verdicts(episode)
    verdict: dict[str, bool | None] = {}
    for m in episode["messages"]:
        if m.get("extracted") is not None:
            verdict[m["sender"]] = recorded.get(m.get("id"))
        else:
            verdict.setdefault(m["sender"], None)
    if episode.get("final_answer") is not None or episode.get("format_failure"):
        verdict[ANSWER] = bool(episode["correct"])
    return verdict


def display_labels(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """A name per node id: its label, or its id where several nodes share the label (5 "sampler"s)."""
    counts: dict[str, int] = defaultdict(int)
    for n in nodes:
        counts[str(n.get("label") or n["id"])] += 1
    out = {}
    for n in nodes:
        label = str(n.get("label") or n["id"])
        out[n["id"]] = label if counts[label] == 1 else str(n["id"])
    return out


# ---- layout ----
def _graph(episode: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes (in order of appearance, with any node named only by an edge or message added) and edges."""
    g = episode.get("graph") or {}
    nodes = [n for n in g.get("nodes", []) if isinstance(n, dict) and "id" in n]
    edges = [e for e in g.get("edges", []) if isinstance(e, dict) and "source" in e and "target" in e]
    known = {n["id"] for n in nodes}
    for e in edges:
        for end in (e["source"], e["target"]):
            if end not in known:
                known.add(end)
                nodes.append({"id": end, "role": end if end in (TASK, ANSWER) else "agent", "label": end})
    return nodes, edges


def layout(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """(x, y) per node id: layers left to right from the task to the answer (see the module doc)."""
    ids = [n["id"] for n in nodes]
    order = {v: i for i, v in enumerate(ids)}
    succ: dict[str, list[str]] = defaultdict(list)
    for e in sorted(edges, key=lambda e: e.get("round") or 0):
        s, t = e["source"], e["target"]
        if s != t and t not in succ[s]:
            succ[s].append(t)
    # keep the edges in round order, skipping any that would close a cycle with those kept so far:
    # a leader that answers its agents in round 1 stays right of them (its round-0 inputs came first)
    dag: dict[str, list[str]] = defaultdict(list)

    def reaches(a: str, b: str) -> bool:
        seen, todo = {a}, [a]
        while todo:
            u = todo.pop()
            if u == b:
                return True
            for w in dag[u]:
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return False

    for e in sorted(edges, key=lambda e: e.get("round") or 0):
        u, w = e["source"], e["target"]
        if u != w and w not in dag[u] and not reaches(w, u):
            dag[u].append(w)
    # longest path layering over the DAG
    indeg: dict[str, int] = defaultdict(int)
    for u in ids:
        for w in dag[u]:
            indeg[w] += 1
    layer = {v: 0 for v in ids}
    ready = [v for v in ids if indeg[v] == 0]
    while ready:
        u = ready.pop(0)
        for w in dag[u]:
            layer[w] = max(layer[w], layer[u] + 1)
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    for v in ids:  # only the task sits in layer 0; only the answer in the last one
        if v != TASK:
            layer[v] = max(layer[v], 1)
    inner = [layer[v] for v in ids if v not in (TASK, ANSWER)]
    if ANSWER in layer:
        layer[ANSWER] = max(inner, default=0) + 1
    if TASK in layer:
        layer[TASK] = 0
    # order within layers by the barycentre of already placed predecessors
    preds: dict[str, list[str]] = defaultdict(list)
    for u in ids:
        for w in succ[u]:
            preds[w].append(u)
    pos: dict[str, tuple[float, float]] = {}
    for lay in sorted(set(layer.values())):
        members = [v for v in ids if layer[v] == lay]

        def bary(v: str) -> float:
            ys = [pos[p][1] for p in preds[v] if p in pos]
            return -sum(ys) / len(ys) if ys else math.inf

        members.sort(key=lambda v: (bary(v) if bary(v) != math.inf else 0.0, order[v]))
        m = len(members)
        for i, v in enumerate(members):
            pos[v] = (lay * X_STEP, ((m - 1) / 2 - i) * Y_STEP)
    return pos


def _curve(
    p0: tuple[float, float], p1: tuple[float, float], bend: float, n: int = 20
) -> list[tuple[float, float]]:
    """A quadratic Bézier from p0 to p1 whose control point sits ``bend`` × length off the chord."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy) or 1.0
    cx, cy = (x0 + x1) / 2 - dy / length * bend * length, (y0 + y1) / 2 + dx / length * bend * length
    pts = []
    for i in range(n + 1):
        t = i / n
        pts.append(
            (
                (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t * t * x1,
                (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t * t * y1,
            )
        )
    return pts


def _trim(pts: list[tuple[float, float]], radius: float) -> list[tuple[float, float]]:
    """Drop the points of a curve within ``radius`` of its end points (they would hide under the markers)."""
    (xs, ys), (xe, ye) = pts[0], pts[-1]
    kept = [
        p
        for p in pts
        if math.hypot(p[0] - xs, p[1] - ys) > radius and math.hypot(p[0] - xe, p[1] - ye) > radius
    ]
    return kept if len(kept) >= 2 else [pts[len(pts) // 2 - 1], pts[len(pts) // 2]]


# ---- the topology ----
def topology_figure(
    episode: dict[str, Any] | None, title: str | None = None, height: int | None = None
) -> go.Figure:
    """The episode's graph as a Plotly figure (see the module doc); an empty figure says why when None."""
    if episode is None:
        return empty_figure("no episode yet")
    episode, _ = coerce_episode(episode)
    nodes, edges = _graph(episode)
    if not nodes:
        return empty_figure("this episode has no graph")
    if len(nodes) > MAX_NODES or len(edges) > MAX_EDGES:
        return empty_figure(f"the graph is too large to draw ({len(nodes)} nodes, {len(edges)} edges)")
    pos = layout(nodes, edges)
    verdict = node_verdicts(episode)
    meta = episode.get("meta") if isinstance(episode.get("meta"), dict) else {}
    adv_episode = meta.get(ADVANTAGE) if isinstance(meta.get(ADVANTAGE), int | float) else None
    adv_nodes = meta.get(NODE_ADVANTAGE) if isinstance(meta.get(NODE_ADVANTAGE), dict) else {}
    training = adv_episode is not None or bool(adv_nodes)
    messages = {m["id"]: m for m in episode["messages"] if isinstance(m, dict) and "id" in m}
    sent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in episode["messages"]:
        sent[m["sender"]].append(m)
    fig = go.Figure()

    # ---- edges: one trace per round, curves bent apart where they would overlap ----
    seen: set[tuple[str, str, Any]] = set()
    pair_count: dict[frozenset[str], int] = defaultdict(int)
    by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in edges:
        key = (e["source"], e["target"], e.get("round"))
        if key in seen or e["source"] == e["target"]:
            continue
        seen.add(key)
        by_round[int(e.get("round") or 0)].append(e)
    annotations = []
    for rnd in sorted(by_round):
        colour = ROUND_COLOURS[rnd % len(ROUND_COLOURS)]
        xs: list[float | None] = []
        ys: list[float | None] = []
        hx, hy, htext = [], [], []
        for e in by_round[rnd]:
            p0, p1 = pos[e["source"]], pos[e["target"]]
            pair = frozenset((e["source"], e["target"]))
            k = pair_count[pair]
            pair_count[pair] += 1
            forward = p1[0] - p0[0]
            bend = 0.0 if (forward > 0 and k == 0 and abs(forward - X_STEP) < 1e-9) else 0.25 + 0.15 * k
            if forward <= 0:
                bend = 0.45 + 0.15 * k
            pts = _trim(_curve(p0, p1, bend), 0.16)
            xs += [p[0] for p in pts] + [None]
            ys += [p[1] for p in pts] + [None]
            mid = pts[len(pts) // 2]
            msg = messages.get(e.get("message_id"))
            excerpt = f"<br>{esc(msg['content'], 160)}" if msg else ""
            hx.append(mid[0])
            hy.append(mid[1])
            htext.append(f"{esc(e['source'])} → {esc(e['target'])} · round {rnd}{excerpt}")
            annotations.append(
                dict(
                    x=pts[-1][0], y=pts[-1][1], ax=pts[-2][0], ay=pts[-2][1],
                    xref="x", yref="y", axref="x", ayref="y", text="", showarrow=True,
                    arrowhead=2, arrowsize=1.3, arrowwidth=1.6, arrowcolor=colour,
                )
            )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line=dict(color=colour, width=1.8), name=f"round {rnd}",
                legendgroup=f"round {rnd}", hoverinfo="skip",
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=hx, y=hy, mode="markers", marker=dict(size=7, color=colour, opacity=0.5),
                hovertext=htext, hoverinfo="text", legendgroup=f"round {rnd}", showlegend=False,
                name=f"round {rnd} messages",
            )
        )  # fmt: skip

    # ---- nodes: one trace per role ----
    names = display_labels(nodes)
    by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in nodes:
        by_role[str(n.get("role") or "agent")].append(n)
    for role, members in by_role.items():
        xs, ys, texts, hovers, rings, fills = [], [], [], [], [], []
        for n in members:
            nid = n["id"]
            x, y = pos[nid]
            v = verdict.get(nid)
            mark = " ✓" if v is True else (" ✗" if v is False else "")
            label = names[nid]
            if nid == ANSWER:
                label = (
                    f"Answer: {episode.get('final_answer')}"
                    if episode.get("final_answer") is not None
                    else "no answer"
                )
            texts.append(esc(label, 28) + mark)
            last = next((m for m in reversed(sent[nid]) if m.get("extracted") is not None), None)
            hover = [f"<b>{esc(label, 60)}</b> ({esc(nid, 40)})", f"role: {esc(role)}"]
            if last is not None:
                hover.append(f"answer: {esc(last['extracted'], 40)}")
            if sent[nid]:
                tokens = sum(int(m.get("completion_tokens") or 0) for m in sent[nid])
                hover.append(f"{len(sent[nid])} message(s), {tokens} tokens")
            if nid == TASK:
                hover.append(esc(episode.get("question"), 200))
                hover.append(f"gold: {esc(episode.get('gold'), 40)}")
            if training and role not in ("task", "answer"):
                a = adv_nodes.get(nid, adv_episode)
                fills.append(a if isinstance(a, int | float) else 0.0)
                if isinstance(a, int | float):
                    hover.append(f"advantage: {a:+.3f}")
            xs.append(x)
            ys.append(y)
            hovers.append("<br>".join(hover))
            rings.append(RIGHT if v is True else (WRONG if v is False else NO_ANSWER))
        symbol = "square" if role == "task" else ("diamond" if role == "answer" else "circle")
        marker: dict[str, Any] = dict(size=30, symbol=symbol, line=dict(color=rings, width=4))
        if training and role not in ("task", "answer"):
            marker.update(color=fills, coloraxis="coloraxis")
        else:
            marker.update(color=role_colour(role))
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="markers+text", text=texts, textposition="bottom center",
                hovertext=hovers, hoverinfo="text", marker=marker, name=esc(role, 20),
                meta="node", cliponaxis=False,
            )
        )  # fmt: skip

    # ---- frame ----
    xs_all = [p[0] for p in pos.values()]
    ys_all = [p[1] for p in pos.values()]
    tallest = max(sum(1 for p in pos.values() if p[0] == x) for x in set(xs_all))
    if title is None:
        verdict_text = (
            "format failure"
            if episode.get("format_failure")
            else ("correct" if episode.get("correct") else "wrong")
        )
        title = f"{esc(episode.get('task_id'), 60)} · {verdict_text}"
        if meta.get(TRAIN_STEP) is not None:
            title += f" · step {esc(meta.get(TRAIN_STEP))}"
    fig.update_layout(
        title=dict(text=title, x=0.01, font=dict(size=14)),
        annotations=annotations,
        height=height or int(min(900, max(340, 70 * tallest + 140))),
        margin=dict(l=20, r=20, t=50, b=30),
        plot_bgcolor="white",
        paper_bgcolor="white",
        showlegend=True,
        legend=dict(orientation="h", yanchor="bottom", y=-0.12, x=0),
        xaxis=dict(visible=False, range=[min(xs_all) - 0.6, max(xs_all) + 0.6]),
        yaxis=dict(visible=False, range=[min(ys_all) - 0.8, max(ys_all) + 0.6]),
        hoverlabel=dict(align="left"),
    )
    if training:
        vals = [abs(v) for v in adv_nodes.values() if isinstance(v, int | float)]
        vals.append(abs(adv_episode) if adv_episode is not None else 0.0)
        m = max(vals) or 1.0
        fig.update_layout(
            coloraxis=dict(
                colorscale="RdBu", cmin=-m, cmax=m, colorbar=dict(title="advantage", thickness=12, len=0.6)
            )
        )
    return fig


def empty_figure(message: str, height: int = 300) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        height=height,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        plot_bgcolor="white",
        annotations=[dict(text=esc(message), showarrow=False, font=dict(size=14, color="#6b7280"))],
    )
    return fig


def accuracy_figure(entries: list[dict[str, Any]], height: int = 240) -> go.Figure:
    """Running accuracy over the episodes in file order (and mean reward per step for training runs)."""
    if not entries:
        return empty_figure("no episodes yet", height)
    ys, k = [], 0
    for i, e in enumerate(entries, 1):
        k += e["correct"]
        ys.append(k / i)
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(ys) + 1)),
            y=ys,
            mode="lines",
            name="running accuracy",
            line=dict(color="#2563eb"),
        )
    )
    steps: dict[int, list[float]] = defaultdict(list)
    for e in entries:
        if e[TRAIN_STEP] is not None:
            steps[e[TRAIN_STEP]].append(e["reward"])
    if steps:
        xs = sorted(steps)
        fig.add_trace(
            go.Scatter(
                x=xs, y=[sum(steps[s]) / len(steps[s]) for s in xs], mode="lines+markers",
                name="mean reward per step", xaxis="x2", line=dict(color="#d97706"),
            )
        )  # fmt: skip
        fig.update_layout(
            xaxis2=dict(title="training step", overlaying="x", side="top", dtick=1, showgrid=False)
        )
    fig.update_layout(
        height=height,
        margin=dict(l=40, r=10, t=30, b=40),
        xaxis=dict(title="episodes"),
        yaxis=dict(range=[0, 1.02], title="accuracy"),
        legend=dict(orientation="h", y=1.15, x=0),
        plot_bgcolor="white",
    )
    return fig
