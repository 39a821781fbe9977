"""One `restora` command per task, made from its spec.

The task's parameters become options with the spec's flags, ranges, units and help; the values
are checked by the spec's own parameter model (the server's), and each image runs through the
executor the server uses: the same models, the same out-of-memory retry, the same selection
compositing (`--mask`). A task module added to backend/tasks/ is a command without a line here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backend.cli.common import add_models_dir, add_quality
from backend.tasks.spec import ParamField, TaskSpec

PARAM_PREFIX = "param_"  # argparse dests of task parameters, apart from the common options


def add_parsers(sub: Any, tasks: Any) -> None:
    for spec in tasks:
        parser = sub.add_parser(spec.cli_name, help=_short_help(spec), description=spec.help)
        add_task_arguments(parser, spec)
        parser.set_defaults(task_command=spec.id)


def _short_help(spec: TaskSpec) -> str:
    """The help's first clause, for the list of commands."""
    first = spec.help.split(". ")[0].split(" (")[0].rstrip(".")
    while len(first) > 80 and ", " in first:
        first = first.rsplit(", ", 1)[0]
    return first[:1].lower() + first[1:]


def build_task_parser(spec: TaskSpec) -> argparse.ArgumentParser:
    """The parser of one task's command on its own (what `restora <command>` parses)."""
    parser = argparse.ArgumentParser(prog=f"restora {spec.cli_name}", description=spec.help)
    add_task_arguments(parser, spec)
    return parser


def add_task_arguments(p: argparse.ArgumentParser, spec: TaskSpec) -> None:
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (one input) or folder; default: NAME-restora.png beside each input"
        + (
            "; the other outputs go beside it as NAME-restora-<output>.png"
            if len(spec.outputs) > 1
            else ""
        ),
    )
    if spec.model is not None:
        default = spec.model.default or "the first installed"
        p.add_argument(
            "-m", "--model", default=None, help=f"a model from `restora models list` ({default})"
        )
    if spec.mask != "ignored":
        p.add_argument(
            "--mask",
            metavar="FILE",
            required=spec.mask == "required",
            help="a selection: a gray image of the input's size; only its white part is "
            "changed, with a soft edge, and the rest of the result is transparent",
        )
        p.add_argument(
            "--feather",
            type=float,
            default=None,
            metavar="PX",
            help="the selection's soft edge in pixels (default: 8%% of its diagonal)",
        )
    for image in spec.images:
        p.add_argument(
            f"--{image.name.replace('_', '-')}",
            dest=f"image_{image.name}",
            metavar="FILE",
            required=image.required,
            help=image.help or image.label,
        )
    group = p.add_argument_group(f"{spec.title} options")
    if spec.presets:
        listed = "; ".join(f"{x.name}: {x.help or x.label}" for x in spec.presets)
        group.add_argument(
            "--preset",
            dest="task_preset",
            choices=[x.name for x in spec.presets],
            default=None,
            help=f"a named set of options; options given beside it win ({listed})".replace(
                "%", "%%"
            ),
        )
    for f in spec.fields():
        _add_param(group, f)
    p.add_argument("-d", "--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("-p", "--precision", default="auto", help="auto (measured), fp32, fp16 or bf16")
    p.add_argument(
        "--format",
        default=None,
        choices=["png", "jpg", "webp", "tif"],
        help="output format for folders and default names (default: png)",
    )
    p.add_argument(
        "--compress",
        type=int,
        default=6,
        choices=range(10),
        metavar="0-9",
        help="PNG compression level (default 6; 1 is much faster for huge images)",
    )
    add_quality(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or status lines")
    add_models_dir(p)


def _add_param(group: Any, f: ParamField) -> None:
    flags = f.info.flags or (f"--{f.name.replace('_', '-')}",)
    dest = PARAM_PREFIX + f.name
    help_text = _help(f)
    if f.type == "bool":
        group.add_argument(
            *flags, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
        return
    convert = {"int": _whole(f), "float": _number(f), "str": str}[f.type]
    group.add_argument(
        *flags,
        dest=dest,
        type=convert,
        default=None,
        choices=list(f.info.choices) or None,
        metavar=None if f.info.choices else _metavar(f),
        help=help_text,
    )


def _help(f: ParamField) -> str:
    parts = [(f.info.help or f.info.label).rstrip(".")]
    if f.type in ("int", "float") and (f.info.minimum is not None or f.info.maximum is not None):
        parts.append(f.range_text())
    default = f.info.none_label if f.default is None else _shown(f.default)
    if default:
        parts.append(f"default: {default}")
    return "; ".join(parts).replace("%", "%%")


def _metavar(f: ParamField) -> str:
    if f.widget == "model":
        return "MODEL"
    if f.info.unit:
        return f.info.unit.upper()
    return {"int": "N", "float": "NUMBER", "str": "TEXT"}[f.type]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(f: ParamField) -> Any:
    def convert(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{f.info.label}: '{text}' is not a number") from None

    return convert


def _whole(f: ParamField) -> Any:
    def convert(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{f.info.label}: '{text}' is not a whole number"
            ) from None

    return convert


def params_from_args(spec: TaskSpec, args: argparse.Namespace) -> dict[str, Any]:
    """The options given, as the JSON object a job sends (what was not given is left out);
    a --preset's values first, any option given beside it over them."""
    given = {f.name: getattr(args, PARAM_PREFIX + f.name, None) for f in spec.fields()}
    chosen = spec.preset(getattr(args, "task_preset", None) or "")
    values = dict(chosen.params) if chosen is not None else {}
    values.update({name: value for name, value in given.items() if value is not None})
    return values


def task_argv(spec: TaskSpec, values: dict[str, Any]) -> list[str]:
    """Command-line options that give `values` (the inverse of params_from_args)."""
    argv: list[str] = []
    fields = {f.name: f for f in spec.fields()}
    for name, value in values.items():
        f = fields[name]
        flag = (f.info.flags or (f"--{name.replace('_', '-')}",))[-1]
        if f.type == "bool":
            argv.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif value is not None:
            argv += [flag, str(value)]
    return argv


# --- running -----------------------------------------------------------------------------------


def cmd_task(args: argparse.Namespace, spec: TaskSpec) -> int:
    from backend.cli.batch import import_torch, precheck, report, status_printer, tally
    from backend.cli.common import registry
    from backend.cli.io import collect_inputs, plan_outputs
    from backend.errors import RestoraError

    say = status_printer(args.quiet)
    raw = params_from_args(spec, args)
    spec.parse_params(raw)  # a bad value fails before any file is read
    inputs = collect_inputs(args.inputs)
    targets = plan_outputs(args, inputs)  # refuses existing outputs unless --overwrite
    mask = _read_mask(args) if spec.mask != "ignored" else None
    images = _read_images(args, spec)
    jobs, failures = precheck(inputs, targets, say)
    if not jobs:
        return tally(failures, len(inputs))
    import_torch(say)
    runner = _Runner(args, spec, raw, registry(args), say)
    feather = getattr(args, "feather", None)
    for src, dst in jobs:
        try:
            runner.run(src, dst, mask, feather, images)
        except RestoraError as exc:
            failures += 1
            report(src, exc.message, exc.hint)
    return tally(failures, len(inputs))


class _Runner:
    """Loads the task's models once, then runs each image through the executor."""

    def __init__(
        self, args: argparse.Namespace, spec: TaskSpec, raw: dict[str, Any], reg: Any, say: Any
    ) -> None:
        from backend.model_cache import ModelCache
        from backend.model_choice import choose_model

        self.args, self.spec, self.raw, self.say = args, spec, raw, say
        self.registry = reg
        params = spec.parse_params(raw)
        self.entries: dict[str, Any] = {}
        slots = [("model", args.model, spec.model)] if spec.model is not None else []
        slots += [(k, n, slot) for k, (n, slot) in spec.helper_models(params).items()]
        for key, name, slot in slots:
            self.entries[key] = choose_model(spec, slot, name, reg.entries, reg.find)
        self.store = ModelCache(args.device, args.precision, max_models=None)
        self.device_type = ""  # where the task's own model runs
        for key, entry in self.entries.items():  # loaded now, so a bad model fails at once
            say(f"loading {entry.name} ({Path(entry.path).name})...")
            model = self.store.get(entry)
            say(
                f"model {entry.name} ({_kind(entry)}) on {model.device.type}, "
                f"{model.precision_label} ({model.precision_reason})"
            )
            if key == "model":
                self.device_type = model.device.type
        self._traits: Any = None

    def run(
        self, src: Path, dst: Path, mask: Any, feather: float | None, images: dict[str, Any]
    ) -> None:
        from backend import executor
        from backend.cli.batch import write_result
        from backend.cli.common import ProgressBar
        from backend.cli.io import output_path
        from backend.errors import InvalidParameterError
        from backend.imaging import read_image
        from backend.tasks.context import TaskContext
        from backend.tasks.spec import Limits, TaskInputs
        from backend.tasks.upscale import DEFAULT_MAX_OUTPUT_PIXELS

        spec, args = self.spec, self.args
        pixels = read_image(src)
        if mask is not None and mask.shape[:2] != pixels.shape[:2]:
            raise InvalidParameterError(
                f"The mask is {mask.shape[1]}x{mask.shape[0]} but {src.name} is "
                f"{pixels.shape[1]}x{pixels.shape[0]}; they must be the same size.",
                "Give a mask of the input's size.",
            )
        params = spec.parse_params(self.raw)
        inputs = TaskInputs(pixels, mask, dict(images))
        if spec.prepare is not None:
            spec.prepare(
                params, inputs, self.entries.get("model"), Limits(DEFAULT_MAX_OUTPUT_PIXELS)
            )
        self._advise(pixels)
        bar = ProgressBar(src.name, not args.quiet)
        ctx = TaskContext(lambda p: bar(p.fraction, _stage(p)))
        ctx.registry = self.registry
        try:
            result = executor.run_task(spec, inputs, params, self.entries, self.store, ctx, feather)
        finally:
            bar.close()
        for line in spec.summarize(result.details) if spec.summarize else ():
            print(f"  {line}", file=sys.stderr)
        if result.nothing_found:
            print(f"{src}: {result.message} {dst} was not written.", file=sys.stderr)
            return
        written = []
        main = len(result.outputs) - 1 if spec.final_last else 0
        for i, out in enumerate(result.outputs):
            path = output_path(dst, out.name, first=i == main)
            image = over(pixels, out.pixels) if out.overlay else out.pixels
            write_result(path, image, args.compress, args.quality)
            written.append(f"{path} ({out.pixels.shape[1]}x{out.pixels.shape[0]})")
        h, w = pixels.shape[:2]
        message = f": {result.message}" if result.message else ""
        print(
            f"{src} ({w}x{h}) -> {', '.join(written)} in {bar.elapsed():.1f}s{message}",
            file=sys.stderr,
        )

    def _advise(self, pixels: Any) -> None:
        """One line when the automatically chosen model would take long on this CPU and a
        fast one is installed; the chosen model still runs."""
        import torch

        from backend.speed_advice import note_for_task, traits_lookup

        if self.args.quiet or self.device_type != "cpu":
            return
        if self._traits is None:  # one lookup for every image of the run
            self._traits = traits_lookup(self.registry.folders)
        height, width = pixels.shape[:2]
        note = note_for_task(
            self.spec,
            getattr(self.args, "model", None),
            self.entries.get("model"),
            self.registry.entries(),
            self._traits,
            width,
            height,
            self.device_type,
            torch.get_num_threads(),
        )
        if note is not None:
            self.say(f"note: {note.message} To run it instead: -m {note.faster}")


def _kind(entry: Any) -> str:
    scale = entry.output_scale or entry.scale
    return entry.architecture + (f" x{scale}" if scale and scale != 1 else "")


def over(base: Any, layer: Any) -> Any:
    """`layer` (with alpha) laid over `base`, as an editor shows it: a file of the whole image.

    Where the layer is transparent the result is `base` exactly; `base` keeps its own channels
    and alpha (a gray one becomes colour under a colour layer), and is resized first when the
    layer is larger (a scaled selection)."""
    import numpy as np

    from backend.imaging import max_value, resize

    if layer.shape[:2] != base.shape[:2]:
        base = resize(base, layer.shape[1], layer.shape[0])
    if base.shape[2] in (1, 2) and layer.shape[2] == 4:
        # a colour layer over a gray image (a colorized selection): the file becomes colour
        gray, rest = base[..., :1], base[..., 1:]
        base = np.concatenate([gray, gray, gray, rest], axis=2)
    top = float(max_value(base.dtype))
    colours = base.shape[2] - (base.shape[2] in (2, 4))
    alpha = layer[..., -1:].astype(np.float32) / top
    top_colour = layer[..., :colours].astype(np.float32)
    mixed = base[..., :colours] + (top_colour - base[..., :colours]) * alpha
    out = base.copy()
    out[..., :colours] = np.where(alpha > 0, np.rint(mixed), base[..., :colours])
    return out


def _stage(progress: Any) -> str:
    if progress.steps:
        return f"{progress.stage} {progress.step}/{progress.steps}"
    return progress.stage


def _read_mask(args: argparse.Namespace) -> Any:
    """The --mask file as one 8-bit channel (the first channel of a gray or colour image)."""
    if not getattr(args, "mask", None):
        return None
    from backend.imaging import read_image

    mask = read_image(Path(args.mask))
    if mask.dtype != "uint8":
        mask = (mask >> 8).astype("uint8")
    return mask[:, :, :1].copy()


def _read_images(args: argparse.Namespace, spec: TaskSpec) -> dict[str, Any]:
    from backend.imaging import read_image

    found = {}
    for image in spec.images:
        path = getattr(args, f"image_{image.name}", None)
        if path:
            found[image.name] = read_image(Path(path))
    return found


def cmd_tasks(args: argparse.Namespace, tasks: Any) -> int:
    """`restora tasks`: what this install runs, with the command for each."""
    import json

    rows = []
    for spec in tasks:
        available, reason = spec.availability()
        rows.append(
            {
                "task": spec.id,
                "command": f"restora {spec.cli_name}",
                "title": spec.title,
                "group": spec.group,
                "available": available,
                "reason": reason,
                "model_folders": list(spec.model.folders) if spec.model else [],
                "outputs": [o.name for o in spec.outputs],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["command"]) for r in rows)
    for spec, row in zip(tasks, rows):
        state = "" if row["available"] else f"  (unavailable: {row['reason']})"
        print(f"{row['command']:<{width}}  {spec.title}: {spec.help.split('. ')[0]}{state}")
    return 0
