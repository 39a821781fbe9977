"""`python -m backend.cli`: the same as the `restora` command."""

from backend.cli import run

run()
