"""Restora's wire protocol: what the server and the plug-ins send each other, as plain dataclasses.

Standard library only: this file is copied into the Krita and GIMP plug-ins, whose Python has
no numpy or pydantic. The server describes its OpenAPI document from these same classes, so a
field added here is a field on the wire.

Every message is a JSON object: `Message.to_json()` makes one and `Message.from_json()` reads
one, ignoring keys it does not know (a newer peer may send more) and raising `ProtocolError`
that names the field when one is missing or of the wrong type.

Images travel separately from the JSON, losslessly, as PNG or as raw pixels
(`RAW_PIXELS_MEDIA_TYPE`, see `PixelFormat`): upload with `POST /v1/images`, then name the
returned id in a `JobRequest`.
"""

import dataclasses
import hashlib
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from .geometry import Bounds, Extent

#: Bumped when a change would break a peer; the plug-in compares it with /v1/health on connect,
#: and the server refuses a job from a client of another version, saying which side to update.
#: 2: tasks are open string ids described by /v1/tasks; named inputs; several named outputs.
PROTOCOL_VERSION = 2
DEFAULT_PORT = 8765

#: Raw pixels: rows top to bottom, each row left to right, channels interleaved (G, GA, RGB or
#: RGBA), 8-bit or 16-bit little-endian. The shape travels as media-type parameters.
RAW_PIXELS_MEDIA_TYPE = "application/x-restora-pixels"
PNG_MEDIA_TYPE = "image/png"
EVENT_STREAM_MEDIA_TYPE = "text/event-stream"

#: Client-chosen job ids and client ids: short, printable, safe in a URL path.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)
#: An uploaded image's id: the sha256 of its shape and pixels (PixelFormat.content_id).
IMAGE_ID_PATTERN = r"^[0-9a-f]{64}$"
_IMAGE_ID_RE = re.compile(IMAGE_ID_PATTERN)
#: Model names are file names without their extension.
MAX_MODEL_NAME = 128
#: An error message quotes at most this much of a value the peer sent.
EXCERPT_CHARS = 64


class ProtocolError(ValueError):
    """A message that does not follow this protocol; the text names the field."""


#: Task ids are open strings (a plug-in lists whatever tasks a newer server describes):
#: lowercase words joined by '-'.
TASK_ID_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
_TASK_ID_RE = re.compile(TASK_ID_PATTERN)
MAX_TASK_ID = 40
#: the well-known input names of a job besides its further named images
IMAGE_INPUT, MASK_INPUT = "image", "mask"


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)


class DownloadState(str, Enum):
    """Where a model download stands (GET /v1/downloads/{id})."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"  # the bytes are in; size and SHA-256 are being checked
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (DownloadState.FINISHED, DownloadState.FAILED, DownloadState.CANCELLED)


class EventType(str, Enum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: a queued job was removed, or a finished one forgotten, with DELETE /v1/jobs/{id}
    REMOVED = "removed"


M = TypeVar("M", bound="Message")


class Message:
    """JSON conversion shared by every protocol dataclass."""

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls: type[M], data: Any) -> M:
        return _from_json(cls, data, cls.__name__)


@dataclass
class ErrorBody(Message):
    """A failure a person can act on: a stable code, what happened, and what to do."""

    code: str
    message: str
    hint: str = ""


@dataclass
class ErrorResponse(Message):
    """The body of every 4xx/5xx answer."""

    error: ErrorBody


@dataclass(frozen=True)
class PixelFormat(Message):
    """The shape of raw pixels; travels as parameters of `RAW_PIXELS_MEDIA_TYPE`."""

    width: int
    height: int
    channels: int  # 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA
    depth: int = 8  # bits per channel: 8 or 16 (little-endian)

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * self.depth // 8

    def media_type(self) -> str:
        return (
            f"{RAW_PIXELS_MEDIA_TYPE}; width={self.width}; height={self.height}; "
            f"channels={self.channels}; depth={self.depth}"
        )

    def check(self) -> None:
        if self.channels not in (1, 2, 3, 4):
            raise ProtocolError(f"channels must be 1, 2, 3 or 4, not {self.channels}")
        if self.depth not in (8, 16):
            raise ProtocolError(f"depth must be 8 or 16, not {self.depth}")
        if self.width < 1 or self.height < 1:
            raise ProtocolError(
                f"width and height must be positive, not {self.width}x{self.height}"
            )

    @classmethod
    def parse(cls, content_type: str) -> "PixelFormat":
        """Read `application/x-restora-pixels; width=W; height=H; channels=C; depth=D`."""
        kind, _, rest = content_type.partition(";")
        if kind.strip().lower() != RAW_PIXELS_MEDIA_TYPE:
            raise ProtocolError(f"not {RAW_PIXELS_MEDIA_TYPE}: {kind.strip()!r}")
        params: dict[str, str] = {}
        for part in rest.split(";"):
            key, eq, value = part.partition("=")
            if eq:
                params[key.strip().lower()] = value.strip().strip('"')
        values: dict[str, int] = {}
        for name in ("width", "height", "channels", "depth"):
            if name not in params:
                if name == "depth":
                    continue
                raise ProtocolError(
                    f"the {RAW_PIXELS_MEDIA_TYPE} content type needs a '{name}' parameter"
                )
            try:
                values[name] = int(params[name])
            except ValueError:
                raise ProtocolError(
                    f"content type parameter '{name}' must be an integer, not {params[name]!r}"
                ) from None
        fmt = cls(**values)
        fmt.check()
        return fmt

    def content_id(self, data: bytes | bytearray | memoryview) -> str:
        """The id the server gives these pixels: sha256 over the shape and the raw bytes.

        A plug-in can compute it itself and skip an upload the server already holds
        (GET /v1/images/{id}).
        """
        digest = hashlib.sha256(
            f"{self.width}x{self.height}x{self.channels}x{self.depth}\n".encode()
        )
        digest.update(data)
        return digest.hexdigest()


@dataclass
class ImageInfo(Message):
    """What POST /v1/images answers: the id to name in a job, and the pixels' shape."""

    id: str
    width: int
    height: int
    channels: int
    depth: int


@dataclass
class JobRequest(Message):
    """A job: which task, which model, the task's parameters, and which uploaded images.

    `bounds` says where `image` sits on the editor's canvas (default: at 0, 0) and `canvas`
    is the canvas size; the result's `Placement` is computed from them. With a `mask` (the
    selection, one 8-bit channel, same size as the image) the job restores in place: the
    default scale is 1, and the result's alpha is the mask feathered by `feather` pixels
    (default: 8% of the selection's diagonal, at least 4), zero outside the selection.
    """

    task: str  # a task id from GET /v1/tasks
    image: str  # an id from POST /v1/images
    model: str | None = None  # None: the task's default model
    params: dict[str, Any] = field(default_factory=dict)
    mask: str | None = None  # an id from POST /v1/images
    #: further named images the task takes (TaskInfo.images): input name -> image id
    images: dict[str, str] = field(default_factory=dict)
    feather: float | None = None
    bounds: Bounds | None = None
    canvas: Extent | None = None
    id: str | None = None  # client-chosen job id: resubmitting the same request is harmless
    client: str | None = None  # events for this job go to GET /v1/events?client=...
    protocol_version: int = PROTOCOL_VERSION

    def check(self) -> None:
        """Refuse ids and names that do not follow the protocol, before anything looks them up."""
        check_task_id(self.task)
        check_image_id(self.image, "image")
        if self.mask is not None:
            check_image_id(self.mask, "mask")
        for name, image_id in self.images.items():
            if not isinstance(name, str) or not _ID_RE.match(name):
                raise ProtocolError(f"images: {excerpt(name)} is not an input name")
            check_image_id(image_id, f"images.{name}")
        if self.id is not None:
            check_id(self.id, "id")
        if self.client is not None:
            check_id(self.client, "client")
        if self.model is not None:
            check_model_name(self.model)


@dataclass
class Placement(Message):
    """Where a result goes: its rectangle on the output canvas (the input canvas scaled)."""

    bounds: Bounds
    canvas: Extent | None  # the canvas size after the job; None when the request gave none
    scale_x: float
    scale_y: float


@dataclass
class ResultOutput(Message):
    """One output of a finished job, fetched on its own: GET /v1/jobs/{id}/result?output=NAME."""

    name: str
    title: str
    width: int
    height: int
    channels: int
    depth: int
    placement: Placement
    kind: str = "image"  # "image" or "mask"


@dataclass
class ResultInfo(Message):
    """A finished job. The top-level size and placement are those of the first output; the
    plug-ins add one layer per output, in a group when there are several, in this order."""

    width: int
    height: int
    channels: int
    depth: int
    placement: Placement
    expires: float  # Unix time after which the server forgets the result
    #: what the task reports besides pixels; face-restore: {"faces": [{"box", "score",
    #: "landmarks", "restored", "note"}], "restored": n, "message": "No face found ..."}
    details: dict[str, Any] = field(default_factory=dict)
    outputs: list[ResultOutput] = field(default_factory=list)
    #: the task found nothing to do (no face): not an error, and no layer to add
    nothing_found: bool = False
    message: str = ""


@dataclass
class JobStatus(Message):
    id: str
    client: str | None
    task: str
    model: str
    state: JobState
    progress: float = 0.0  # 0..1
    stage: str = ""
    step: int | None = None  # tile or sampler step n of `steps` in the current stage
    steps: int | None = None
    #: the latest intermediate image's id, while the job runs: GET /v1/jobs/{id}/preview
    preview: str | None = None
    position: int | None = None  # jobs ahead of this one while it is queued
    error: ErrorBody | None = None
    result: ResultInfo | None = None
    #: a few words for the person waiting, from the job's start: e.g. that an installed fast
    #: model would take a fraction of the time (the result's details carry it at length)
    note: str = ""
    created: float = 0.0
    started: float | None = None
    finished: float | None = None


@dataclass
class JobEvent(Message):
    """One event of GET /v1/events: `seq` increases by at least one per event on a server."""

    seq: int
    type: EventType
    job: str
    client: str | None
    time: float
    state: JobState
    progress: float = 0.0
    stage: str = ""
    step: int | None = None
    steps: int | None = None
    preview: str | None = None
    position: int | None = None
    error: ErrorBody | None = None
    result: ResultInfo | None = None
    note: str = ""  # JobStatus.note


@dataclass
class ParamInfo(Message):
    """One parameter of a task, so that a plug-in can build its form without code per task."""

    name: str
    type: str  # "int", "float", "str" or "bool"
    default: Any = None
    optional: bool = False  # null is allowed; `none_label` says what it means
    choices: list[Any] | None = None
    label: str = ""
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    unit: str = ""  # "px", "x", "%": shown beside the value
    #: "spin", "slider", "checkbox", "choice", "text", "prompt", "seed" or "model"
    widget: str = ""
    none_label: str = ""
    choice_labels: list[str] = field(default_factory=list)
    advanced: bool = False  # behind an "Advanced" fold
    #: widget "model": the purposes of the models that fit (ModelInfo.purpose)
    purposes: list[str] = field(default_factory=list)
    #: shown only when the task's model is of one of these architectures (empty: always)
    applies_to: list[str] = field(default_factory=list)


@dataclass
class PresetInfo(Message):
    """A named set of a task's options ("Photo", "Fast"): choosing it sets `params` at once and,
    with `model_traits`, the first usable installed model that has all of them (none: the
    model is kept)."""

    name: str  # the id, e.g. "photo"
    label: str  # words for the menu, e.g. "Photo"
    help: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    model_traits: list[str] = field(default_factory=list)


@dataclass
class ImageInputInfo(Message):
    """A further named image a task takes (a reference image), sent in JobRequest.images."""

    name: str
    label: str
    required: bool = False
    help: str = ""


@dataclass
class OutputInfo(Message):
    name: str
    title: str
    kind: str = "image"


@dataclass
class TaskInfo(Message):
    """GET /v1/tasks: everything a plug-in needs to offer a task, its form and its result."""

    task: str  # the id
    available: bool  # False: `reason` says why (a package or a model is missing) and `hint`
    title: str = ""
    help: str = ""
    default_model: str | None = None
    #: how the task treats the selection: "optional", "required" or "ignored"
    mask: str = "optional"
    images: list[ImageInputInfo] = field(default_factory=list)
    outputs: list[OutputInfo] = field(default_factory=list)
    resizes: bool = False  # the result may be larger than the input
    #: "upscale", "restore" (keeps the original), "enhance" (redraws) or "edit"
    group: str = "restore"
    #: the outputs are stages in order and the last one is the finished image (the editors
    #: stack it on top, so what shows is the result)
    final_last: bool = False
    order: int = 100  # menu order, lower first
    #: the catalog's task name, for offering a download when no model is installed
    catalog_task: str = ""
    params: list[ParamInfo] = field(default_factory=list)
    presets: list[PresetInfo] = field(default_factory=list)
    #: the server runs the task but has no model for it: `reason` and `hint` say what to install
    needs_model: bool = False
    reason: str = ""  # why the task is not available
    hint: str = ""  # what to do about it


@dataclass
class ModelInfo(Message):
    name: str
    tasks: list[str]
    folder: str
    usable: bool
    reason: str = ""
    architecture: str = ""
    purpose: str = ""
    scale: int = 0  # the result's scale (an ncnn x2 model may be an x4 network plus a resize)
    input_channels: int = 0
    output_channels: int = 0
    size_minimum: int = 0
    size_multiple_of: int = 1
    size_square: bool = False
    tiling: str = ""
    dtypes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    size_bytes: int = 0
    loaded: bool = False
    network_scale: int = 0  # what one pass through the network does
    #: for people: the catalog's name for this file, else one made from the file name
    label: str = ""
    description: str = ""
    #: what the model is good at and how fast it is (the catalog's traits, e.g. "photo", "fast")
    traits: list[str] = field(default_factory=list)
    #: the catalog entry this file is ("" when it is none)
    catalog_name: str = ""


@dataclass
class CatalogModelInfo(Message):
    """GET /v1/catalog: a model the server can download, and whether it is installed."""

    name: str  # the catalog name, sent in DownloadRequest.name
    task: str  # the catalog's task (TaskInfo.catalog_task)
    label: str = ""  # for people, e.g. "Real-ESRGAN x4plus"
    description: str = ""
    size_bytes: int | None = None  # None where the catalog does not know
    licence: str = ""  # an SPDX-like id, e.g. "BSD-3-Clause"
    #: the licence forbids commercial use / restricts use: ask first (accept_licence)
    non_commercial: bool = False
    restricted_use: bool = False
    traits: list[str] = field(default_factory=list)
    recommended: bool = False  # the one to offer first for its task
    installed: bool = False  # its file is in one of the server's models folders
    verified: bool = False  # the catalog pins its SHA-256 (only these download from an editor)
    family: str = ""
    folder: str = ""
    file: str = ""


@dataclass
class DownloadRequest(Message):
    """POST /v1/downloads: fetch a catalog model into the server's models folder."""

    name: str  # a catalog name (CatalogModelInfo.name)
    #: the user has read and accepted the licence; needed for non-commercial and restricted ones
    accept_licence: bool = False

    def check(self) -> None:
        check_model_name(self.name)


@dataclass
class DownloadInfo(Message):
    """One model download; `model` is the registry name once it is installed."""

    id: str
    name: str
    state: DownloadState
    bytes_done: int = 0
    bytes_total: int | None = None  # None while the size is unknown
    error: ErrorBody | None = None
    model: str = ""
    label: str = ""
    task: str = ""
    created: float = 0.0
    finished: float | None = None


@dataclass
class MemoryInfo(Message):
    device_total: int | None = None  # bytes; None where the device does not say
    device_free: int | None = None
    ram_available: int | None = None


@dataclass
class Health(Message):
    """GET /v1/health. Without the token (when one is set) only the first four are filled."""

    status: str
    protocol_version: int
    version: str
    auth_required: bool
    instance: str | None = None  # changes on every server start: old job ids are gone
    ready: bool = False  # the device is chosen and the models to preload are loaded
    device: str | None = None
    device_name: str | None = None
    memory: MemoryInfo | None = None
    queued: int = 0
    running: str | None = None
    loaded_models: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)  # the ids of the tasks this server runs
    max_upload_bytes: int | None = None
    max_pixels: int | None = None


def check_task_id(value: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TASK_ID or not _TASK_ID_RE.match(value):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ProtocolError(
            f"task must be a task id such as 'upscale' (lowercase words joined by '-'), not {shown}"
        )
    return value


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """`value` as an error message may quote it: its repr, cut after `limit` characters."""
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_id(value: str, what: str = "id") -> str:
    # fullmatch: `$` would also accept a trailing newline
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ProtocolError(
            f"{what} must be 1-64 letters, digits, '.', '_' or '-' starting "
            f"with a letter or digit, not '{excerpt(value)}'"
        )
    return value


def check_image_id(value: str, what: str = "image") -> str:
    if not isinstance(value, str) or not _IMAGE_ID_RE.fullmatch(value):
        raise ProtocolError(
            f"{what} must be an image id from POST /v1/images (64 lowercase hex digits), "
            f"not '{excerpt(value)}'"
        )
    return value


def check_model_name(value: str) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_MODEL_NAME
        or not value.isprintable()
    ):
        raise ProtocolError(
            f"model must be a model name of 1-{MAX_MODEL_NAME} printable characters, "
            f"not '{excerpt(value)}'"
        )
    return value


# --- JSON conversion -------------------------------------------------------------------------


def _to_json(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _hints_cache:
        module = sys.modules.get(cls.__module__)
        _hints_cache[cls] = typing.get_type_hints(cls, vars(module) if module else None)
    return _hints_cache[cls]


def _from_json(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _from_json(inner[0], data, where)
    if origin in (list, tuple):
        if not isinstance(data, list):
            raise ProtocolError(f"{where} must be a list, not {type(data).__name__}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_from_json(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is dict or tp is dict:
        if not isinstance(data, dict):
            raise ProtocolError(f"{where} must be an object, not {type(data).__name__}")
        return dict(data)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(data)
        except ValueError:
            known = ", ".join(repr(m.value) for m in tp)
            raise ProtocolError(f"{where} must be one of {known}, not {data!r}") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ProtocolError(f"{where} must be an object, not {type(data).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _from_json(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}.{f.name} is missing")
        return tp(**kwargs)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise ProtocolError(f"{where} must be a number, not {data!r}")
        return float(data)
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise ProtocolError(f"{where} must be an integer, not {data!r}")
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise ProtocolError(f"{where} must be true or false, not {data!r}")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise ProtocolError(f"{where} must be a string, not {data!r}")
        return data
    return data
