"""Model backends: one interface (`Backend.generate`), several implementations."""

from workbench.models.base import Backend, Generation, Message, Request, SamplingParams
from workbench.models.loading import ModelLoadError, load_hf_backend

__all__ = ["Backend", "Generation", "Message", "ModelLoadError", "Request", "SamplingParams", "load_backend"]


def load_backend(spec: str, dtype: str = "auto", device: str = "auto", max_batch_size: int = 32) -> Backend:
    """The backend for a ``--model`` spec. Today: transformers (embedded model, hub id, local path, +adapter)."""
    return load_hf_backend(spec, dtype=dtype, device=device, max_batch_size=max_batch_size)
