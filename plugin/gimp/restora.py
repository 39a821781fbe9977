#!/usr/bin/env python3
"""Restora for GIMP 3: the file GIMP starts, installed as plug-ins/restora/restora.py.

GIMP runs it with its Python 3 (the system's on Linux, its own on Windows and macOS). The
plug-in's code sits next to it in `restora_lib/` (gimp/, common/ and shared/), put there by
`installer/gimp_plugin.py`; this file only makes that folder importable.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from restora_lib.gimp.plugin import main

main(sys.argv)
