"""What each action does, on any editor: read what to send, and place what comes back.

`prepare_*` run on the UI thread and read the document through the `Editor` interface; the
job itself runs on a worker (job_runner.py); `apply_result` runs on the UI thread again and
only ever adds: new layers (after scaling the document, for a task that resizes) or a new
document. What a task does with the selection and whether it resizes come from its
`TaskInfo`, never from its name. A task's further images (TaskInfo.images, the reference
images of an edit) are the layers picked for them in the settings, each sent whole at its own
size whatever the selection: the backend resizes them, and a reference is a picture to look
at, not a part of the layer to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..shared.geometry import Bounds
from ..shared.protocol import ImageInputInfo, TaskInfo
from .catalog import MASK_IGNORED, MASK_REQUIRED, Catalog, resizes_now, task_title
from .editor import Editor, NewLayer
from .errors import DocumentGone, NothingFound, NothingSelected, PluginError
from .job_runner import JobInput, JobResult, OutputPixels
from .pixels import PixelBuffer, clear_transparent, is_blank, to_channels
from .selection import restore_region
from .settings import Settings


@dataclass
class PreparedJob:
    input: JobInput
    #: a selection restored in place: the canvas keeps its size
    in_place: bool
    #: the result opens as a new document instead of scaling this one
    into_document: bool = False
    #: the task's title, for layer names and messages
    title: str = ""
    #: the task uses a selection (its mask mode is not "ignored")
    uses_selection: bool = True
    #: the outputs are stages and the last is the finished image: it goes on top
    final_last: bool = False


def prepare_task(editor: Editor, settings: Settings, task: str, catalog: Catalog,
                 on_selection: bool | None = None) -> PreparedJob:
    """A task on the document as its spec says: `on_selection` True for the selection (Restore
    selection), False for the whole image, None (the task's own action) for the selection when
    there is one. A task whose mask is "required" always needs a selection; one whose mask is
    "ignored" always gets the whole image, and the selection is not sent; so does the task's
    own action when its options make the image larger."""
    info = _offered(catalog, task)
    title = task_title(info)
    model = _model(settings, task, catalog)
    if info.mask == MASK_IGNORED:
        return _whole_image(editor, settings, info, model, catalog)
    if on_selection is None and resizes_now(info, settings.options_for(task)):
        # an upscale enlarges the document; only Restore selection runs it in place
        return _whole_image(editor, settings, info, model, catalog)
    has_selection = editor.selection_bounds() is not None
    if info.mask == MASK_REQUIRED or on_selection or (on_selection is None and has_selection):
        return _selection(editor, settings, info, model, catalog, title)
    return _whole_image(editor, settings, info, model, catalog)


def prepare_restore(editor: Editor, settings: Settings, task: str | None = None,
                    catalog: Catalog | None = None) -> PreparedJob:
    """The selection's box plus padding and the selection as a mask, restored in place, with
    the given task or the one chosen in the settings."""
    catalog = _need(catalog)
    return prepare_task(editor, settings, _pick(catalog, task or settings.task), catalog, True)


def prepare_whole_image(editor: Editor, settings: Settings, task: str | None = None,
                        catalog: Catalog | None = None) -> PreparedJob:
    """The whole layer (or image), with the given task or the one chosen in the settings."""
    catalog = _need(catalog)
    return prepare_task(editor, settings, _pick(catalog, task or settings.task), catalog, False)


def _need(catalog: Catalog | None) -> Catalog:
    if catalog is None:
        raise PluginError("Restora has not reached its backend yet, so it does not know "
                          "what the backend runs.", "Wait until it is connected, then try "
                          "again.")
    return catalog


def _pick(catalog: Catalog, task: str) -> str:
    picked = catalog.pick_task(task)
    if picked is None:
        raise PluginError("This Restora backend runs no task yet.",
                          "Download a model for one from a task's Download button, or "
                          "put one in Restora's models folder.")
    return picked


def _offered(catalog: Catalog, task: str) -> TaskInfo:
    info = catalog.task_info(task)
    if info is None:
        raise PluginError(f"This Restora backend does not run '{catalog.title(task)}'.",
                          "Choose another task, or update the backend.")
    if not info.available:
        reason = info.reason or f"This Restora backend cannot run '{task_title(info)}' now."
        raise PluginError(reason, info.hint or "Choose another task.")
    return info


def _model(settings: Settings, task: str, catalog: Catalog) -> str | None:
    """The model to name in the job: the user's when the backend has it; None for
    Recommended (or a model the backend no longer has) and for a task that runs no model.
    Unnamed, the backend runs its default (the catalog's default_model, which the docker
    and dialog show as "Recommended: ...") and knows the choice was left to it, so it can
    advise a faster installed model (its speed note)."""
    if not catalog.takes_model(task):
        return None
    wanted = settings.model_for(task)
    return wanted if catalog.resolve_model(task, wanted) == wanted else None


def _declared(catalog: Catalog, task: str, model: str | None) -> set[str]:
    """The options to send: the task's parameters that apply to the model (an option for
    another architecture, such as a JPEG quality for FBCNN, stays saved but unsent)."""
    return {p.name for p in catalog.shown_params(task, model)}


def _selection(editor: Editor, settings: Settings, info: TaskInfo, model: str | None,
               catalog: Catalog, title: str) -> PreparedJob:
    canvas = editor.canvas()
    selection = editor.selection_bounds()
    if selection is None or selection.is_empty:
        raise NothingSelected("Nothing is selected.",
                              f"Select the part {title} should work on, then try again.")
    region = restore_region(selection, canvas, settings.padding, settings.feather)
    mask = editor.selection_mask(region)
    if is_blank(mask):
        raise NothingSelected("The selection is empty.",
                              f"Select the part {title} should work on, then try again.")
    pixels = editor.read_pixels(region, projection=settings.source == "projection")
    options = settings.options_for(info.task, True, _declared(catalog, info.task, model))
    images, notes = references(editor, settings, info)
    job = JobInput(task=info.task, image=pixels, bounds=region, canvas=canvas, model=model,
                   params=options, mask=mask, feather=settings.feather, params_checked=True,
                   images=images, notes=notes)
    return PreparedJob(job, in_place=True, title=title, final_last=info.final_last)


def _whole_image(editor: Editor, settings: Settings, info: TaskInfo, model: str | None,
                 catalog: Catalog) -> PreparedJob:
    canvas = editor.canvas()
    region = Bounds.of(canvas)
    pixels = editor.read_pixels(region, projection=settings.source == "projection")
    options = settings.options_for(info.task, declared=_declared(catalog, info.task, model))
    images, notes = references(editor, settings, info)
    job = JobInput(task=info.task, image=pixels, bounds=region, canvas=canvas, model=model,
                   params=options, params_checked=True, images=images, notes=notes)
    into_document = info.resizes and settings.upscale_into == "document"
    return PreparedJob(job, in_place=False, into_document=into_document,
                       title=task_title(info), uses_selection=info.mask != MASK_IGNORED,
                       final_last=info.final_last)


def references(editor: Editor, settings: Settings,
               info: TaskInfo) -> tuple[dict[str, PixelBuffer], list[str]]:
    """The layers picked for the task's further images, read whole: input name -> pixels, and
    a note for each picked layer this document lacks (it is skipped: the job runs without it,
    as it would have had the user picked none). Choices for inputs the task no longer takes
    stay in the settings, unsent."""
    picked = settings.references_for(info.task)
    images: dict[str, PixelBuffer] = {}
    notes: list[str] = []
    for wanted in info.images:
        layer = picked.get(wanted.name, "")
        pixels = editor.read_layer_pixels(layer) if layer else None
        if pixels is not None:
            images[wanted.name] = pixels
            continue
        gone = f"this image has no layer '{layer}' besides the one being edited" if layer \
            else ""
        if wanted.required:  # the backend would refuse the job: say it before sending
            raise PluginError(f"{task_title(info)} needs {_input_title(wanted).lower()}"
                              f"{'; ' + gone if gone else ''}.",
                              "Pick a layer for it with the task's options, then try again.")
        if gone:
            notes.append(f"{_input_title(wanted)}: {gone}, so it was left out.")
    return images, notes


def _input_title(wanted: ImageInputInfo) -> str:
    return wanted.label or wanted.name.replace("_", " ").capitalize()


def layer_name(prepared: PreparedJob, result: JobResult) -> str:
    """Named after the task and the model: "Upscale x4 - realesrgan-x4plus"; a task that
    names its result (an edit, after its instruction) gives the title instead."""
    label = result.details.get("label")
    if isinstance(label, str) and label.strip():
        return f"{label.strip()} - {result.model}" if result.model else label.strip()
    title = prepared.title or result.task
    scale = result.placement.scale_x if result.outputs else 1.0
    if prepared.in_place:
        title += " selection"
    elif abs(scale - 1.0) > 1e-6:
        title += f" x{scale:.3g}"
    return f"{title} - {result.model}" if result.model else title


def apply_result(editor: Editor, prepared: PreparedJob, result: JobResult) -> str:
    """Place the result; returns the new layer's (or group's, or document's) name. Never
    changes the user's pixels: it adds layers, scales the document by the editor's own
    command, or opens a new document."""
    if not editor.is_alive():
        raise DocumentGone("The document was closed before the result arrived; the result "
                           "was dropped.", "")
    canvas = editor.canvas()
    if canvas != prepared.input.canvas:
        raise DocumentGone(
            f"The image was resized while Restora worked ({prepared.input.canvas.width}x"
            f"{prepared.input.canvas.height} to {canvas.width}x{canvas.height}), so the result "
            "no longer fits; it was dropped.", "Run the action again.")
    if result.nothing_found or not result.outputs:
        # the task found nothing to do (no face): no empty layer, just say so
        raise NothingFound(result.message or "Nothing was found to change.",
                           _nothing_found_hint(prepared))
    name = layer_name(prepared, result)
    layers = [NewLayer(output.title or output.name or name, _pixels(prepared, output),
                       output.placement.bounds) for output in result.outputs]
    if prepared.final_last:
        layers.reverse()  # the layer stack top to bottom: the finished image shows
    if prepared.into_document and len(layers) == 1:
        editor.new_document(name, layers[0].pixels)
        return name
    target = result.placement.canvas or canvas
    with editor.undo_group(name):
        if target != canvas:
            editor.scale_canvas(target)
        if len(layers) == 1:
            editor.add_layer(name, layers[0].pixels, layers[0].at)
        else:
            editor.add_layers(name, layers)
    return name


def _pixels(prepared: PreparedJob, output: OutputPixels) -> PixelBuffer:
    pixels = to_channels(output.pixels, prepared.input.image.channels)
    if prepared.in_place:
        pixels = clear_transparent(pixels)  # outside the selection: empty, not hidden colour
    return pixels


def _nothing_found_hint(prepared: PreparedJob) -> str:
    if not prepared.in_place and prepared.uses_selection:
        return f"Select the part to work on (a box around it) and run {prepared.title} again."
    return "The image was not changed."
