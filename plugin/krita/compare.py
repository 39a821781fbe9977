"""Compare and keep: the last result's layers shown or hidden, and blended with what is below.

Results are always new layers over the original, so "before" is the result hidden, and a
strength below 100% is the result layer's opacity: the original shows through without the
job being run again, and the artist can still paint on, mask or delete the layer.
"""

from __future__ import annotations

from typing import Any

from .document import find_node


def live_layers(run: Any) -> list[Any]:
    """The layers (or group) a run added that are still in its document."""
    editor = getattr(run, "editor", None)
    if editor is None or not run.layers or not editor.is_alive():
        return []
    found = [find_node(editor.document, node.uniqueId()) for node in run.layers]
    return [node for node in found if node is not None]


def shown(run: Any) -> bool:
    layers = live_layers(run)
    return bool(layers) and all(node.visible() for node in layers)


def set_shown(run: Any, visible: bool) -> None:
    for node in live_layers(run):
        node.setVisible(visible)
    _refresh(run)


def strength(run: Any) -> float:
    """The result's opacity, 0..1 (1 when it has no layers)."""
    layers = live_layers(run)
    return layers[0].opacity() / 255.0 if layers else 1.0


def set_strength(run: Any, fraction: float) -> None:
    value = max(0, min(255, round(fraction * 255)))
    for node in live_layers(run):
        node.setOpacity(value)
    _refresh(run)


def _refresh(run: Any) -> None:
    editor = getattr(run, "editor", None)
    if editor is not None and editor.is_alive():
        editor.document.refreshProjection()
