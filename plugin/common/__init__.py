"""The editor-agnostic part of the plug-ins: standard library only, no editor imports.

client.py the backend's HTTP API · event_stream.py server-sent events · job_runner.py one job
on a worker thread · connection.py backend state for the UI · catalog.py tasks, models and
options · operations.py what each action sends and where its result goes · editor.py the
interface an adapter implements · selection.py selection box and mask · pixels.py raw pixel
shuffles · settings.py the settings and their storage as strings · errors.py typed errors ·
launcher.py starts the local backend the installer recorded.
"""
