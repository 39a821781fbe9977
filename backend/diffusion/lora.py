"""A LoRA applied to a shared model for one job, and removed after it (the next job may not
want it), through diffusers' LoRA loader (peft)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backend.errors import InvalidParameterError

ADAPTER = "restora-job"


@contextmanager
def applied_lora(model: Any, lora: Any, weight: float, vae: Any = None) -> Iterator[None]:
    if lora is None:
        yield
        return
    if lora.family not in ("unknown", model.family):
        raise InvalidParameterError(
            f"The LoRA '{lora.entry.name}' is for {lora.family}; the model is {model.family}.",
            "Choose a LoRA made for the model's family.",
        )
    pipe = model.pipeline(None if vae is None else vae.vae)
    try:
        pipe.load_lora_weights(dict(lora.state_dict), adapter_name=ADAPTER)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InvalidParameterError(
            f"The LoRA '{lora.entry.name}' does not fit this model: {exc}", ""
        ) from exc
    try:
        pipe.set_adapters([ADAPTER], [weight])
        yield
    finally:
        pipe.delete_adapters(ADAPTER)
