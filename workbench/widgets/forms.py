"""The protocol / team form: widgets for a protocol's options and a team of models, filling an
EvalConfig through the same validation as ``--set`` (a bad value is one line in the form)."""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import ipywidgets as w

from workbench.config import ConfigError
from workbench.evaluate import EvalConfig
from workbench.protocols import PROTOCOLS

MAX_MEMBERS = 3  # extra team members beside "default" (the `model` section)
_LAYOUT = {"description_width": "150px"}


def _option_widget(name: str, default: Any) -> w.Widget | None:
    if isinstance(default, bool):
        return w.Checkbox(value=default, description=name, style=_LAYOUT)
    if isinstance(default, int):
        return w.IntText(value=default, description=name, style=_LAYOUT)
    if isinstance(default, float):
        return w.FloatText(value=default, description=name, style=_LAYOUT)
    if isinstance(default, str):
        return w.Text(value=default, description=name, style=_LAYOUT)
    if isinstance(default, tuple) and all(isinstance(x, str) for x in default):
        return w.Text(value=",".join(default), description=name, style=_LAYOUT, placeholder="comma-separated")
    return None  # nested options (e.g. moa's layers) stay at their defaults; set them with overrides


class TeamForm(w.VBox):
    """``protocol``, its options (prefilled with the defaults, ``options`` overriding them), the
    default ``model`` and up to three more ``members`` ({name: {"model": SPEC, "temperature": T}}).

    ``form.overrides()`` is the nested dict ``EvalConfig.build`` takes; ``form.config(task=...,
    limit=...)`` builds and validates it (None, with the error shown in ``form.status``, if it fails)."""

    def __init__(
        self,
        protocol: str = "vote",
        model: str = "smollm2",
        options: dict[str, Any] | None = None,
        members: dict[str, dict[str, Any]] | None = None,
    ):
        self.protocol = w.Dropdown(
            options=list(PROTOCOLS), value=protocol, description="protocol", style=_LAYOUT
        )
        self.model = w.Text(value=model, description="model (default)", style=_LAYOUT)
        self.member_rows = [
            (
                w.Text(description=f"member {i + 1}", placeholder="name", style=_LAYOUT),
                w.Text(placeholder="model spec, e.g. openai:URL#MODEL", layout=w.Layout(width="340px")),
                w.FloatText(value=0.3, description="temperature", layout=w.Layout(width="200px")),
            )
            for i in range(MAX_MEMBERS)
        ]
        for i, (name, spec) in enumerate((members or {}).items()):
            if i >= MAX_MEMBERS:
                raise ValueError(f"TeamForm takes at most {MAX_MEMBERS} members beside default")
            self.member_rows[i][0].value = name
            self.member_rows[i][1].value = str(spec.get("model", ""))
            self.member_rows[i][2].value = float(spec.get("temperature", 0.3))
        self.options_box = w.VBox()
        self.status = w.HTML()
        self.option_widgets: dict[str, w.Widget] = {}
        self._build_options(options or {})
        self.protocol.observe(lambda ch: self._build_options({}), names="value")
        super().__init__(
            [
                self.protocol,
                self.model,
                *[w.HBox(list(row)) for row in self.member_rows],
                w.HTML("<b>protocol options</b> (members: <code>default</code> or a member's name)"),
                self.options_box,
                self.status,
            ]
        )

    def _build_options(self, values: dict[str, Any]) -> None:
        cfg = PROTOCOLS[self.protocol.value].config
        unknown = set(values) - {f.name for f in dataclasses.fields(cfg)}
        if unknown:
            raise ValueError(f"{self.protocol.value} has no option(s) {sorted(unknown)}")
        self.option_widgets = {}
        for f in dataclasses.fields(cfg):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            widget = _option_widget(f.name, default)
            if widget is None:
                continue
            if f.name in values:
                v = values[f.name]
                widget.value = ",".join(v) if isinstance(v, (list, tuple)) else v
            self.option_widgets[f.name] = widget
        self.options_box.children = list(self.option_widgets.values())

    def members(self) -> dict[str, dict[str, Any]]:
        """The extra members whose name is filled in."""
        return {
            name.value.strip(): {"model": spec.value.strip(), "temperature": temp.value}
            for name, spec, temp in self.member_rows
            if name.value.strip()
        }

    def overrides(self) -> dict[str, Any]:
        cfg = PROTOCOLS[self.protocol.value].config
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        options: dict[str, Any] = {}
        for name, widget in self.option_widgets.items():
            value = widget.value
            if isinstance(defaults.get(name), tuple):
                value = [x.strip() for x in str(value).split(",") if x.strip()]
                if tuple(value) == defaults[name]:
                    continue
            elif value == defaults.get(name):
                continue
            options[name] = value
        models: dict[str, Any] = {}
        team: dict[str, Any] = {}
        for name, m in self.members().items():
            if not m["model"] or m["model"] == self.model.value.strip():
                team[name] = {"model": "default", "temperature": m["temperature"]}
            else:
                models[name] = {"name": m["model"]}
                team[name] = {"model": name, "temperature": m["temperature"]}
        return {"protocol": options, "models": models, "team": team}

    def config(self, **top: Any) -> EvalConfig | None:
        """The validated EvalConfig (``top``: task=, limit=, split=, seed=, out=, ...)."""
        try:
            top.setdefault("model", self.model.value.strip())
            cfg = EvalConfig.build(self.overrides(), protocol=self.protocol.value, **top)
        except ConfigError as e:
            self.status.value = f'<span style="color:#b00">{html.escape(str(e))}</span>'
            return None
        members = ", ".join(["default"] + list(self.members()))
        self.status.value = f"ok: {html.escape(self.protocol.value)} with members {html.escape(members)}"
        return cfg
