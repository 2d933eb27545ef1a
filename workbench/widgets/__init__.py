"""ipywidgets for the notebooks: the logic lives here, tested headless; notebook cells only call it.

    from workbench.widgets import EpisodeExplorer, RunPicker, TeamForm, TrainMonitor, find_runs
    EpisodeExplorer.for_runs(run_dirs)            # pick a run, filter, step through episodes
    monitor = TrainMonitor(cfg); monitor.start()  # curves update while train() runs; Stop button
    result = monitor.wait()                       # the TrainResult (a stopped run says interrupted)
    form = TeamForm(protocol="leader"); form.config(task="arithmetic", limit=20)
    runs = find_runs(RUN_DIRS, kind="eval")       # run folders checked, with one line per problem

Needs the ``notebook`` extra (ipywidgets, plotly). Importing this module also silences library
warnings that a notebook user cannot act on (``quiet_library_warnings``).
"""

from workbench.widgets.explorer import EpisodeExplorer
from workbench.widgets.forms import TeamForm
from workbench.widgets.monitor import TrainMonitor
from workbench.widgets.picker import FoundRuns, RunPicker, find_runs, run_kind
from workbench.widgets.plots import quiet_library_warnings, show_figure

quiet_library_warnings()

__all__ = [
    "EpisodeExplorer",
    "FoundRuns",
    "RunPicker",
    "TeamForm",
    "TrainMonitor",
    "find_runs",
    "quiet_library_warnings",
    "run_kind",
    "show_figure",
]
