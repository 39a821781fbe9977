"""How both sides put a measure into words for a person: the backend's notes and the
editors' result lines say a wait the same way."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """Seconds as a person reads a wait: "8 s", "5 min", "2.5 h"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
