"""The GIMP 3 adapter: Restora's procedures under Filters > Restora.

Only `plugin.py`, `gimp_editor.py` and the windows (`ui.py`, `backend_status.py`,
`option_widgets.py`, `dialog.py`, `settings_dialog.py`) import GIMP (through gi); the rest is
standard library and runs, and is tested, without GIMP:

procedures.py  the procedures, their menu order and arguments as plain data, and how a run's
               argument values become the common `Settings`
flow.py        one action from start to end on any `Editor`: connect, check, send, wait on the
               calling thread while a worker talks to the backend, place the result
cancel_guard.py  a small watchdog process that cancels the backend's job when GIMP kills the
               plug-in (that is what GIMP's progress-bar cancel does to a plug-in)
store.py       the settings the procedures share (backend address, token), in a JSON file
status.py      what the dialogs and message boxes say about the backend, in plain words
progress_text.py  the line beside GIMP's progress bar: stage, step, time elapsed and left
option_form.py the numbers and choices of a task's options as the backend describes them
plugin.py      the Gimp.PlugIn: registers the procedures, runs them (dialog, progress, errors)
gimp_editor.py the `Editor` interface on a GIMP image: GEGL buffers in, new layers out
ui.py          GTK start, callbacks on GTK's thread, the message box
backend_status.py  the status line every dialog starts with, and its Start backend button
option_widgets.py  one task option as GTK widgets (spin button, GIMP slider, dropdown, toggle)
dialog.py      the task procedures' GimpUi dialog: status, task, model, options
settings_dialog.py  Filters > Restora > Settings: the address, the token, Check
restora.py     the file GIMP starts (installed as plug-ins/restora/restora.py)

Packaged (installer/gimp_plugin.py), this folder becomes `restora_lib/gimp/` next to copies of
`plugin/common/` and `shared/`, so the relative imports below work unchanged.
"""
