"""A pickle that would run code is refused with Restora's own message: what was refused, why,
and what to use instead (not PyTorch's advice to turn the safety off)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from backend.errors import ModelFormatError
from backend.models.loading import load_state_dict


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_code_running_pickle_is_refused_in_restoras_words(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": RunsCode()}, path)
    with pytest.raises(ModelFormatError) as err:
        load_state_dict(path)
    message, hint = err.value.message, err.value.hint
    assert message.startswith("evil.pth was refused") and "system" in message
    assert "run code" in message and ".safetensors" in hint
    for text in (message, hint):
        assert "weights_only" not in text and ".." not in text and "torch.load" not in text
