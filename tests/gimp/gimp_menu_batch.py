"""Batch Python run inside the whole GIMP 3 (windows and menus on Xvfb) by
tests/gimp/test_gimp_menu.py: what Restora registered at GIMP's start from its cached task
list while no backend answers. GIMP's own log of how it built its menus is read by the test.
"""

import json
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp  # noqa: E402

NAMES = ["restora-upscale-image", "restora-face-restore", "restora-video-upscale",
         "restora-denoise", "restora-defects", "restora-colorize",
         "restora-restore-selection", "restora-settings"]

pdb = Gimp.get_pdb()
found = {}
for name in NAMES:
    proc = pdb.lookup_procedure(name)
    if proc is not None:
        found[name] = {"label": proc.get_menu_label(), "paths": proc.get_menu_paths()}
with open(os.environ["RESTORA_E2E_OUT"], "w") as f:
    json.dump({"procedures": found}, f, indent=1, sort_keys=True)
