"""The live topology and transcript viewer's logic, free of Gradio (the notebooks use it too).

    from workbench.viewer import Viewer, topology_figure, transcript_html
    v = Viewer("runs")                       # a runs root; run names are paths relative to it
    v.run_names()                            # newest first
    live = v.live(v.run_names()[0])          # counters, newest episode's figure and transcript
    topology_figure(episode_dict).show()

``workbench/viewer/app.py`` is the Gradio app on top of this (``workbench app``, loaded by
``load_app``; ``apps/viewer.py`` is its thin entry point); docs/viewer.md describes
the views, the training fields and the security model.
"""

from workbench.viewer.compare import outcome_grid, summary_rows
from workbench.viewer.figures import accuracy_figure, layout, node_verdicts, topology_figure
from workbench.viewer.html import counters_html, notices_html, transcript_html
from workbench.viewer.store import (
    ADVANTAGE,
    NODE_ADVANTAGE,
    TRAIN_STEP,
    EpisodeTail,
    RunAccessError,
    RunsRoot,
    counters,
    filter_entries,
    load_run_info,
)
from workbench.viewer.views import Viewer

__all__ = [
    "ADVANTAGE",
    "NODE_ADVANTAGE",
    "TRAIN_STEP",
    "EpisodeTail",
    "RunAccessError",
    "RunsRoot",
    "Viewer",
    "accuracy_figure",
    "counters",
    "counters_html",
    "filter_entries",
    "layout",
    "load_run_info",
    "node_verdicts",
    "notices_html",
    "outcome_grid",
    "summary_rows",
    "topology_figure",
    "transcript_html",
]


def load_app():
    """The Gradio app module ``workbench.viewer.app`` (``serve``, ``build_app``, ``main``).

    Imported only here, on demand: the rest of ``workbench.viewer`` (and the notebooks) never
    import Gradio. Needs the ``app`` extra (``pip install 'workbench[app]'``).
    """
    import importlib
    import importlib.util

    from workbench.config import ConfigError

    if importlib.util.find_spec("gradio") is None:
        raise ConfigError(
            "the viewer needs Gradio: pip install 'workbench[app]' (or -e '.[app]' in a checkout)"
        )
    return importlib.import_module("workbench.viewer.app")
