"""A LoRA (a Lightning LoRA for 4 or 8 steps, a style) applied to an edit pipeline for one job
and removed after it, through the pipeline's own LoRA loader (peft)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backend.errors import InvalidParameterError

ADAPTER = "restora-edit-job"


@contextmanager
def applied_lora(model: Any, lora: Any, weight: float) -> Iterator[None]:
    if lora is None:
        yield
        return
    pipe = model.pipe
    if not hasattr(pipe, "load_lora_weights"):
        raise InvalidParameterError(f"{model.family} takes no LoRA.", "Choose no LoRA.")
    try:
        pipe.load_lora_weights(dict(lora.state_dict), adapter_name=ADAPTER)
    except (ValueError, KeyError, RuntimeError, AttributeError) as exc:
        raise InvalidParameterError(
            f"The LoRA '{lora.entry.name}' does not fit {model.family}: {exc}",
            "Choose a LoRA made for this model.",
        ) from exc
    try:
        pipe.set_adapters([ADAPTER], [weight])
        yield
    finally:
        pipe.delete_adapters(ADAPTER)
