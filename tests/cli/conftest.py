"""The `restora` commands as a user runs them (cli_runner.py), and the README's own non-editable
set-up in a fresh clone.
"""
