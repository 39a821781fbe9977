"""`restora`: the command-line front end.

One command per task, made from the task specs (backend/cli/tasks.py), beside the commands for
models, plug-ins, the server and the doctor. Nothing heavy is imported at module level, so
`restora --help` answers at once; torch is imported only by the commands that run a model.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from backend import __version__
from backend.cli.common import ProgressBar, error

__all__ = ["ProgressBar", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    from backend.cli import doctor, models, plugin, serve, tasks
    from backend.tasks.registry import default_registry

    parser = argparse.ArgumentParser(
        prog="restora",
        description="Upscale and restore images with local AI models (Krita/GIMP backend).",
    )
    parser.add_argument("--version", action="version", version=f"restora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tasks.add_parsers(sub, default_registry())
    listing = sub.add_parser("tasks", help="list the tasks and their commands")
    listing.add_argument("--json", action="store_true", help="print JSON")
    models.add_parser(sub)
    plugin.add_parser(sub)
    doctor.add_parser(sub)
    serve.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    # spandrel compiles some blocks with torch.jit.script, which PyTorch now flags on import
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    from backend.errors import RestoraError
    from backend.tasks.registry import default_registry

    try:
        task = getattr(args, "task_command", None)
        if task is not None:
            from backend.cli.tasks import cmd_task

            return cmd_task(args, default_registry().get(task))
        if args.command == "tasks":
            from backend.cli.tasks import cmd_tasks

            return cmd_tasks(args, default_registry())
        if args.command == "models":
            from backend.cli.models import cmd_models

            return cmd_models(args)
        if args.command == "plugin":
            from backend.cli.plugin import cmd_plugin

            return cmd_plugin(args)
        if args.command == "doctor":
            from backend.cli.doctor import cmd_doctor

            return cmd_doctor(args)
        if args.command == "serve":
            from backend.server import serve_from_args

            return serve_from_args(args)
        parser.print_help()
        return 0
    except RestoraError as exc:
        error(exc.message, exc.hint)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `restora` command (and `python -m backend.cli`): main, then the exit.

    Before exiting, every object alive is moved out of the garbage collector's reach: at
    shutdown the interpreter otherwise collects over all of PyTorch's and spandrel's objects,
    which took 1.2 s after an upscale here (0.25 s frozen), longer than a small image's
    tile. Nothing is skipped: files are closed and exit handlers run as before, and the
    memory goes back with the process. Not in `main`, which tests call in one long process."""
    code = main()
    import gc

    gc.freeze()
    sys.exit(code)
