"""What each menu action does, on any editor: read what to send, and place what comes back.

`prepare_*` run on the UI thread and read the document through the `Editor` interface; the
job itself runs on a worker (job_runner.py); `apply_result` runs on the UI thread again and
only ever adds: a new layer (after scaling the document, for an upscale) or a new document.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..shared.geometry import Bounds
from ..shared.protocol import Task
from .catalog import Catalog, task_title
from .editor import Editor
from .errors import DocumentGone, NothingFound, NothingSelected, PluginError
from .job_runner import JobInput, JobResult
from .pixels import clear_transparent, is_blank, to_channels
from .selection import restore_region
from .settings import Settings


@dataclass
class PreparedJob:
    input: JobInput
    #: a selection restored in place: the canvas keeps its size
    in_place: bool
    #: an upscale that opens a new document instead of scaling this one
    into_document: bool = False


def prepare_upscale(editor: Editor, settings: Settings,
                    catalog: Catalog | None = None) -> PreparedJob:
    """The whole layer (or image), to be upscaled with the upscale model and options."""
    return _whole_image(editor, settings, Task.UPSCALE, catalog)


def prepare_restore(editor: Editor, settings: Settings, task: Task | None = None,
                    catalog: Catalog | None = None) -> PreparedJob:
    """The selection's box plus padding and the selection as a mask, restored in place."""
    task = task or settings.restore_task()
    model = _model(settings, task, catalog)  # before reading: refuse an unknown task early
    canvas = editor.canvas()
    selection = editor.selection_bounds()
    if selection is None or selection.is_empty:
        raise NothingSelected("Nothing is selected.",
                              "Select the part to restore, or use Upscale image for all of it.")
    region = restore_region(selection, canvas, settings.padding, settings.feather)
    mask = editor.selection_mask(region)
    if is_blank(mask):
        raise NothingSelected("The selection is empty.",
                              "Select the part to restore, then try again.")
    pixels = editor.read_pixels(region, projection=settings.source == "projection")
    job = JobInput(task=task, image=pixels, bounds=region, canvas=canvas, model=model,
                   params=settings.options_for(task, True, _declared(catalog, task)),
                   mask=mask, feather=settings.feather, params_checked=catalog is not None)
    return PreparedJob(job, in_place=True)


def prepare_task(editor: Editor, settings: Settings, task: Task,
                 catalog: Catalog | None = None) -> PreparedJob:
    """A task's own action: on the selection when there is one, else on the whole image."""
    if editor.selection_bounds() is not None:
        return prepare_restore(editor, settings, task, catalog)
    return _whole_image(editor, settings, task, catalog)


def _model(settings: Settings, task: Task, catalog: Catalog | None) -> str | None:
    """The user's model for the task; with the backend's catalog, one the backend has (and
    a task it runs). Without a catalog the job runner asks the backend."""
    if catalog is None:
        return settings.model_for(task)
    if not catalog.offers(task):
        raise PluginError(f"This Restora backend does not run '{task_title(task)}'.",
                          "Choose another task in the Restora docker, or update the backend.")
    return catalog.resolve_model(task, settings.model_for(task))


def _declared(catalog: Catalog | None, task: Task) -> set[str] | None:
    """The task's parameter names from the backend; None without a catalog (the job runner
    then asks the backend before it submits)."""
    return None if catalog is None else {p.name for p in catalog.params(task)}


def _whole_image(editor: Editor, settings: Settings, task: Task,
                 catalog: Catalog | None) -> PreparedJob:
    model = _model(settings, task, catalog)
    canvas = editor.canvas()
    region = Bounds.of(canvas)
    pixels = editor.read_pixels(region, projection=settings.source == "projection")
    job = JobInput(task=task, image=pixels, bounds=region, canvas=canvas, model=model,
                   params=settings.options_for(task, declared=_declared(catalog, task)),
                   params_checked=catalog is not None)
    into_document = task == Task.UPSCALE and settings.upscale_into == "document"
    return PreparedJob(job, in_place=False, into_document=into_document)


def layer_name(prepared: PreparedJob, result: JobResult) -> str:
    """Named after the task and the model: "Upscale x4 - realesrgan-x4plus"."""
    title = task_title(result.task)
    scale = result.placement.scale_x
    if prepared.in_place:
        title += " selection"
    elif abs(scale - 1.0) > 1e-6:
        title += f" x{scale:.3g}"
    return f"{title} - {result.model}"


def apply_result(editor: Editor, prepared: PreparedJob, result: JobResult) -> str:
    """Place the result; returns the new layer's (or document's) name. Never changes the
    user's pixels: it adds a layer, scales the document by the editor's own command, or opens
    a new document."""
    if not editor.is_alive():
        raise DocumentGone("The document was closed before the result arrived; the result "
                           "was dropped.", "")
    canvas = editor.canvas()
    if canvas != prepared.input.canvas:
        raise DocumentGone(
            f"The image was resized while Restora worked ({prepared.input.canvas.width}x"
            f"{prepared.input.canvas.height} to {canvas.width}x{canvas.height}), so the result "
            "no longer fits; it was dropped.", "Run the action again.")
    if result.details.get("restored") == 0:
        # the task found nothing to restore (no face): no empty layer, just say so
        raise NothingFound(result.details.get("message") or "Nothing was found to restore.",
                           _nothing_found_hint(result.task, prepared.in_place))
    name = layer_name(prepared, result)
    pixels = to_channels(result.pixels, prepared.input.image.channels)
    if prepared.in_place:
        pixels = clear_transparent(pixels)  # outside the selection: empty, not hidden colour
    placement = result.placement
    if prepared.into_document:
        editor.new_document(name, pixels)
        return name
    target = placement.canvas or canvas
    with editor.undo_group(name):
        if target != canvas:
            editor.scale_canvas(target)
        editor.add_layer(name, pixels, placement.bounds)
    return name


def _nothing_found_hint(task: Task, in_place: bool) -> str:
    if task == Task.FACE_RESTORE and not in_place:
        return ("Select a face (a box around it) and run Restore faces again: a selection "
                "with no face found is restored as a face.")
    return "The image was not changed."
