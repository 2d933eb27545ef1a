"""The live training monitor: train() in a worker thread, curves redrawn as metrics.jsonl grows,
and a Stop button that ends the run cleanly after the current step (``train(should_stop=...)``:
a checkpoint, the adapter, a summary with ``interrupted: true``; resumable)."""

from __future__ import annotations

import html
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ipywidgets as w

from workbench.config import ConfigError
from workbench.rl.report import curves_figure, read_evals, read_metrics
from workbench.runs import default_root
from workbench.viewer.figures import empty_figure
from workbench.widgets.plots import show_figure


class TrainMonitor(w.VBox):
    """``TrainMonitor(cfg).start()`` shows the monitor and returns at once; ``wait()`` returns the
    TrainResult when the run ends (None, with one line saying why, if it failed)."""

    def __init__(self, cfg, runs_root: str | Path | None = None, poll_s: float = 2.0, **train_kwargs: Any):
        if not cfg.out:  # the monitor needs the folder before train() makes it
            root = Path(runs_root) if runs_root is not None else default_root()
            cfg = replace(cfg, out=str(root / f"{time.strftime('%Y%m%d-%H%M%S')}-train-{cfg.recipe}"))
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        self.total = cfg.train.warm_start + cfg.train.steps
        self.poll_s = poll_s
        self.train_kwargs = train_kwargs
        self.stop_event = threading.Event()
        self.result = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._seen: tuple[int, int] | None = None
        self.stop_button = w.Button(description="Stop after this step", button_style="danger", icon="stop")
        self.stop_button.on_click(lambda _: self.stop())
        self.status = w.HTML("not started")
        self.curves = w.Output()
        show_figure(self.curves, empty_figure("waiting for the first step", height=240))
        super().__init__([w.HBox([self.stop_button, self.status]), self.curves])
        self.add_class("wb-train-monitor")

    # ---- control ----
    def start(self) -> TrainMonitor:
        from workbench.rl.trainer import train

        def run() -> None:
            try:
                self.result = train(
                    self.cfg, progress=False, should_stop=self.stop_event.is_set, **self.train_kwargs
                )
            except (ConfigError, OSError, ValueError) as e:
                self.error = f"training stopped: {e}"
            except Exception as e:  # a bug still ends as one line here; the run folder keeps its logs
                self.error = f"training failed: {type(e).__name__}: {e}"

        self.status.value = (
            f"starting: loading the model, building the pool … (run folder {html.escape(str(self.run_dir))})"
        )
        self._thread = threading.Thread(target=run, name="workbench-train", daemon=True)
        self._thread.start()
        threading.Thread(target=self._poll, name="workbench-train-monitor", daemon=True).start()
        return self

    def stop(self) -> None:
        """Ask the run to end after the step in progress (a checkpoint of it is saved)."""
        self.stop_event.set()
        self.stop_button.disabled = True
        self.stop_button.description = "stopping …"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None):
        """Block until the run ends; returns its TrainResult (None when it failed: see ``error``)."""
        if self._thread is None:
            raise RuntimeError("call start() first")
        try:
            self._thread.join(timeout)
        except KeyboardInterrupt:  # the kernel's interrupt: stop cleanly rather than abandon the thread
            self.stop()
            self._thread.join()
        self.refresh(force=True)
        if self.error:
            print(self.error)
        return self.result

    # ---- drawing ----
    def _poll(self) -> None:
        while self.running:
            self.refresh()
            time.sleep(self.poll_s)
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Redraw the curves when metrics.jsonl or evals.jsonl grew (or ``force``)."""
        sizes = tuple(
            (self.run_dir / f).stat().st_size if (self.run_dir / f).exists() else 0
            for f in ("metrics.jsonl", "evals.jsonl")
        )
        if sizes != self._seen or force:
            self._seen = sizes
            rows = read_metrics(self.run_dir) if sizes[0] else []
            evals = read_evals(self.run_dir) if sizes[1] else []
            if rows or evals:
                show_figure(self.curves, curves_figure(self.run_dir))
            self.status.value = self._status(rows, evals)

    def _status(self, rows: list[dict[str, Any]], evals: list[dict[str, Any]]) -> str:
        if self.error:
            return f'<span style="color:#b00">{html.escape(self.error)}</span>'
        step = rows[-1]["step"] if rows else 0
        parts = [f"step {step}/{self.total}"]
        if rows and isinstance(rows[-1].get("loss"), (int, float)):
            parts.append(f"loss {rows[-1]['loss']:.3f}")
        if rows and isinstance(rows[-1].get("reward"), (int, float)):
            parts.append(f"reward {rows[-1]['reward']:.2f}")
        if evals:
            parts.append(f"dev accuracy {evals[-1]['accuracy']:.3f} at step {evals[-1]['step']}")
        if self.result is not None:
            s = self.result.summary
            ended = (
                f"stopped at step {s['stopped_at_step']} (resumable)" if s.get("interrupted") else "finished"
            )
            parts.insert(0, f"<b>{ended}</b>")
            self.stop_button.disabled = True
        elif self.running:
            parts.insert(
                0, "<b>stopping after this step</b>" if self.stop_event.is_set() else "<b>training</b>"
            )
        return " · ".join(parts) + f" · <code>{html.escape(str(self.run_dir))}</code>"
