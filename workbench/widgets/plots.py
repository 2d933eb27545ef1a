"""Figures inside widgets, from any thread, and warnings a notebook user cannot act on."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import ipywidgets as w

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def figure_bundle(fig: Any) -> dict[str, Any]:
    """A display_data output for a Plotly figure: the interactive plot in JupyterLab, text elsewhere."""
    title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else "figure"
    return {
        "output_type": "display_data",
        "data": {PLOTLY_MIME: fig.to_plotly_json(), "text/plain": f"<plotly figure: {title}>"},
        "metadata": {},
    }


def show_figure(out: w.Output, fig: Any) -> None:
    """Replace what ``out`` shows with ``fig``. Setting ``outputs`` works from a worker thread too
    (``with out:`` captures by the cell's message header, which a thread does not have)."""
    out.outputs = (figure_bundle(fig),)


def quiet_library_warnings() -> None:
    """Silence warnings from transformers/torch that name internals a user cannot change
    (``past_key_values`` is deprecated ..., ``is_gradient_checkpointing`` is deprecated ...)."""
    for pattern in (r".*past_key_values.*", r".*is_gradient_checkpointing.*"):
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
    # the same deprecation through transformers' logger ("`past_key_values`/`cache_params` are deprecated")
    generic = logging.getLogger("transformers.utils.generic")
    if not any(isinstance(f, _NoCacheDeprecation) for f in generic.filters):
        generic.addFilter(_NoCacheDeprecation())


class _NoCacheDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "past_key_values" not in record.getMessage()
