"""The settings Restora's GIMP procedures share, in one small JSON file in GIMP's folder.

GIMP remembers each procedure's last argument values by itself; this file only carries what
every procedure should agree on (the backend's address and token). Filters > Restora >
Settings writes it, every procedure reads it; it is kept out of GIMP's remembered values,
which GIMP writes in plain text for every procedure. A missing or broken file gives the
defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from ..common.settings import Settings

FILE_NAME = "restora-settings.json"
#: the only fields kept: the rest comes from each procedure's own remembered arguments
SHARED_FIELDS = ("backend_url", "token")


def load(path: str) -> Settings:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return Settings()
    if not isinstance(raw, dict):
        return Settings()
    return Settings.from_strings({k: v for k, v in raw.items()
                                  if k in SHARED_FIELDS and isinstance(v, str)})


def save(path: str, settings: Settings) -> None:
    """Write atomically (a crash never leaves half a file); a failure is not worth an error."""
    strings = settings.to_strings()
    data = {k: strings[k] for k in SHARED_FIELDS}
    folder = os.path.dirname(path) or "."
    with contextlib.suppress(OSError):
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".restora-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise
