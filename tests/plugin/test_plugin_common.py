"""The editor-agnostic plug-in parts that need no backend: pixels, selection maths, settings,
the event-stream parser, the catalog and layer names."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.common import pixels as px
from plugin.common import task_cache
from plugin.common.catalog import (
    Catalog,
    applies,
    ordered,
    resizes_now,
    task_action_id,
    task_title,
)
from plugin.common.errors import BackendUnavailable, NothingSelected
from plugin.common.event_stream import EventParser
from plugin.common.job_runner import JobInput, JobResult, OutputPixels, stage_text
from plugin.common.operations import PreparedJob, layer_name
from plugin.common.selection import crop_plane, plane_bounds, restore_region
from plugin.common.settings import DEFAULT_URL, Settings, normalise_url
from shared.geometry import Bounds, Extent
from shared.protocol import Health, ModelInfo, OutputInfo, ParamInfo, Placement, TaskInfo
from tests.plugin_fixtures import to_array, to_buffer

# --- pixels ---


@pytest.mark.parametrize("depth", [8, 16])
def test_swap_red_blue_is_bgra_and_its_own_inverse(depth: int) -> None:
    rng = np.random.default_rng(0)
    top = 65535 if depth == 16 else 255
    rgba = rng.integers(0, top + 1, (5, 7, 4)).astype(np.uint16 if depth == 16 else np.uint8)
    buf = to_buffer(rgba)
    swapped = px.swap_red_blue(buf.data, depth)
    bgra = np.frombuffer(bytes(swapped), rgba.dtype.newbyteorder("<")).reshape(rgba.shape)
    np.testing.assert_array_equal(bgra, rgba[:, :, [2, 1, 0, 3]])
    assert px.swap_red_blue(swapped, depth) == bytearray(buf.data)


@pytest.mark.parametrize("depth", [8, 16])
def test_to_channels_expands_and_reduces(depth: int) -> None:
    rng = np.random.default_rng(1)
    top = 65535 if depth == 16 else 255
    dtype = np.uint16 if depth == 16 else np.uint8
    gray_alpha = rng.integers(0, top + 1, (3, 4, 2)).astype(dtype)
    rgba = to_array(px.to_channels(to_buffer(gray_alpha), 4))
    np.testing.assert_array_equal(rgba[:, :, 0], gray_alpha[:, :, 0])
    np.testing.assert_array_equal(rgba[:, :, 2], gray_alpha[:, :, 0])
    np.testing.assert_array_equal(rgba[:, :, 3], gray_alpha[:, :, 1])
    rgb = rng.integers(0, top + 1, (3, 4, 3)).astype(dtype)
    opaque = to_array(px.to_channels(to_buffer(rgb), 4))
    np.testing.assert_array_equal(opaque[:, :, :3], rgb)
    assert (opaque[:, :, 3] == top).all()
    back = to_array(px.to_channels(to_buffer(opaque), 2))
    wide = rgb.astype(np.int64)
    luma = np.rint((299 * wide[..., 0] + 587 * wide[..., 1] + 114 * wide[..., 2]) / 1000)
    assert np.abs(back[:, :, 0] - luma).max() <= 1 and (back[:, :, 1] == top).all()


def test_pixel_buffer_refuses_a_wrong_length_and_crops() -> None:
    image = np.arange(6 * 5 * 4, dtype=np.uint8).reshape(5, 6, 4)
    buf = to_buffer(image)
    with pytest.raises(ValueError, match="bytes"):
        px.PixelBuffer(buf.data[:-1], buf.format)
    np.testing.assert_array_equal(to_array(px.crop(buf, Bounds(1, 2, 3, 2))), image[2:4, 1:4])
    with pytest.raises(ValueError):
        px.crop(buf, Bounds(4, 0, 3, 1))
    assert px.is_blank(bytes(10)) and not px.is_blank(b"\0\0\1")


@pytest.mark.parametrize(("channels", "depth"), [(4, 8), (4, 16), (2, 8), (2, 16)])
def test_clear_transparent_empties_only_zero_alpha_pixels(channels: int, depth: int) -> None:
    rng = np.random.default_rng(2)
    dtype = np.uint16 if depth == 16 else np.uint8
    image = rng.integers(1, 250, (6, 9, channels)).astype(dtype)
    image[1:3, 2:7, -1] = 0
    image[4, 4, -1] = 256 if depth == 16 else 1  # only the high byte set: still visible
    out = to_array(px.clear_transparent(to_buffer(image)))
    expected = image.copy()
    expected[1:3, 2:7] = 0
    np.testing.assert_array_equal(out, expected)
    rgb = to_buffer(image[:, :, :1])
    assert px.clear_transparent(rgb) is rgb


# --- selection ---


def test_restore_region_pads_and_clips_to_the_canvas() -> None:
    canvas = Extent(128, 96)
    assert restore_region(Bounds(40, 30, 20, 10), canvas, padding=8) == Bounds(32, 22, 36, 26)
    assert restore_region(Bounds(2, 3, 20, 10), canvas, padding=8) == Bounds(0, 0, 30, 21)
    # default: the feather width, at least 16 pixels
    assert restore_region(Bounds(40, 30, 20, 10), canvas) == Bounds(24, 14, 52, 42)
    assert restore_region(Bounds(100, 80, 60, 60), canvas, padding=0) == Bounds(100, 80, 28, 16)
    with pytest.raises(NothingSelected):
        restore_region(Bounds(200, 200, 5, 5), canvas)


def test_crop_plane_and_plane_bounds() -> None:
    plane = np.zeros((10, 12), np.uint8)
    plane[3:6, 4:9] = 255
    data = plane.tobytes()
    assert plane_bounds(data, Extent(12, 10)) == Bounds(4, 3, 5, 3)
    assert plane_bounds(bytes(12 * 10), Extent(12, 10)) is None
    region = Bounds(-2, 2, 8, 5)  # reaches beyond the plane: zero there
    out = np.frombuffer(bytes(crop_plane(data, Bounds(0, 0, 12, 10), region)), np.uint8)
    expected = np.zeros((5, 8), np.uint8)
    expected[:, 2:] = plane[2:7, 0:6]
    np.testing.assert_array_equal(out.reshape(5, 8), expected)


# --- settings ---


def test_settings_round_trip_and_broken_values_fall_back() -> None:
    s = Settings(backend_url="http://10.0.0.2:9000", token="abc", task="upscale",
                 models={"upscale": "tiny-x2"}, options={"upscale": {"scale": 2, "tile": None}},
                 feather=6.5, padding=12, source="projection", upscale_into="document")
    stored = s.to_strings()
    assert all(isinstance(v, str) for v in stored.values())
    assert Settings.from_strings(stored) == s
    broken = {**stored, "padding": '"wide"', "feather": "-3", "models": "[1, 2]",
              "source": '"sideways"', "backend_url": '"ftp://x"', "token": "{not json"}
    loaded = Settings.from_strings(broken)
    assert loaded.padding is None and loaded.feather is None and loaded.models == {}
    assert loaded.source == "layer" and loaded.backend_url == DEFAULT_URL
    assert loaded.token == "" and loaded.upscale_into == "document"
    assert s.options_for("upscale") == {"scale": 2}
    assert s.options_for("upscale", in_place=True) == {}
    assert s.model_for("upscale") == "tiny-x2" and s.model_for("denoise") is None


@pytest.mark.parametrize(("url", "expected"), [
    ("127.0.0.1:8765", "http://127.0.0.1:8765"),
    (" https://gpu.example.org/restora/ ", "https://gpu.example.org/restora"),
    ("http://[::1]:9000", "http://[::1]:9000"),
    ("ftp://x", None), ("http://", None), ("http://host:port", None), ("", None),
])
def test_normalise_url(url: str, expected: str | None) -> None:
    assert normalise_url(url) == expected


# --- events ---


def test_event_parser_follows_the_sse_rules() -> None:
    parser = EventParser()
    lines = ["retry: 1000", "", ": keepalive", "id: 7", "event: progress", 'data: {"a":',
             'data: 1}', "", "data:x", "", "id: 9\r\n", "\n"]
    events = [e for e in (parser.feed(line) for line in lines) if e is not None]
    assert [(e.id, e.event, e.data) for e in events] == [("7", "progress", '{"a":\n1}'),
                                                          ("7", "message", "x")]
    assert parser.last_id == "9" and parser.retry_ms == 1000


# --- catalog and names ---


def catalog() -> Catalog:
    health = Health(status="ok", protocol_version=2, version="0.1.0", auth_required=False,
                    instance="i", device="cpu", device_name="Xeon")
    tasks = [
        TaskInfo("denoise", False, title="Denoise", order=30, reason="Denoise needs a model.",
                 hint="Put a restoration model in upscale_models."),
        TaskInfo("upscale", True, title="Upscale", order=10, default_model="realesrgan-x4plus",
                 resizes=True, params=[
                     ParamInfo("scale", "float", None, True, label="Scale"),
                     ParamInfo("jpeg_quality", "int", None, True, applies_to=["FBCNN"])]),
        TaskInfo("split", True, title="Split", order=20,
                 outputs=[OutputInfo("a", "A"), OutputInfo("b", "B")]),
    ]
    models = [ModelInfo("tiny-x2", ["upscale"], "upscale_models", True, scale=2,
                        architecture="Compact", purpose="SR"),
              ModelInfo("broken", [], "upscale_models", False, reason="not a model"),
              ModelInfo("fbcnn", ["upscale"], "upscale_models", True, architecture="FBCNN",
                        purpose="Restoration"),
              ModelInfo("tiny-x4", ["upscale"], "upscale_models", True, scale=4,
                        architecture="Compact", purpose="SR")]
    return Catalog(health, tasks, models)


def test_catalog_menus_models_and_defaults() -> None:
    c = catalog()
    assert [t.task for t in c.available_tasks()] == ["upscale", "split"]  # by order
    assert [t.task for t in ordered(c.tasks)] == ["upscale", "split", "denoise"]
    assert not c.offers("denoise") and not c.offers("nope")
    assert [m.name for m in c.models_for("upscale")] == ["tiny-x2", "fbcnn", "tiny-x4"]
    assert c.default_model("upscale") == "tiny-x2"  # the backend's default is not there
    assert c.resolve_model("upscale", "tiny-x4") == "tiny-x4"
    assert c.resolve_model("upscale", "gone") == "tiny-x2"
    assert c.default_model("denoise") is None
    assert c.takes_model("upscale") and not c.takes_model("split")
    assert c.pick_task("") == "upscale" and c.pick_task("split") == "split"
    assert c.describe() == "Connected: Restora 0.1.0 on Xeon, 3 models"
    assert [p.name for p in c.params("upscale")] == ["scale", "jpeg_quality"]
    # jpeg_quality is FBCNN's: hidden (and not sent) for another architecture
    assert [p.name for p in c.shown_params("upscale", "tiny-x4")] == ["scale"]
    assert [p.name for p in c.shown_params("upscale", "fbcnn")] == ["scale", "jpeg_quality"]
    assert applies(c.params("upscale")[1], None)
    assert [m.name for m in c.models_of(["Restoration"])] == ["fbcnn"]
    assert c.title("denoise") == "Denoise" and c.title("new-thing") == "New thing"
    assert task_action_id("face-restore") == "restora_task_face_restore"
    assert task_title(None, "face-restore") == "Face restore"


def test_a_task_resizes_now_only_when_its_size_options_enlarge_the_image() -> None:
    """HYPIR at scale 1 works on a selection in place; at 2 (or an upscaler at the model's
    own scale, or with a width) the editors run it on the whole image."""
    upscale = catalog().task_info("upscale")
    hypir = TaskInfo("hypir", True, resizes=True, params=[
        ParamInfo("scale", "float", 1.0, label="Scale"), ParamInfo("prompt", "str", "")])
    sized = TaskInfo("sized", True, resizes=True)  # no option says by how much
    assert resizes_now(upscale, {}) and resizes_now(upscale, {"scale": 2.0})
    assert not resizes_now(upscale, {"scale": 1.0}) and not resizes_now(upscale, {"scale": 1})
    assert not resizes_now(hypir, {}) and resizes_now(hypir, {"scale": 2.0})
    assert resizes_now(hypir, {"scale": "two"})  # a broken option: the safe side
    assert resizes_now(sized, {}) and not resizes_now(catalog().task_info("split"), {})
    assert not resizes_now(None, {})


def test_task_cache_round_trip_and_broken_files(tmp_path) -> None:
    path = str(tmp_path / "sub" / task_cache.FILE_NAME)
    assert task_cache.load(path) == []
    tasks = catalog().tasks
    assert task_cache.save(path, tasks) and not task_cache.save(path, tasks)  # unchanged
    assert task_cache.load(path) == tasks
    (tmp_path / "sub" / task_cache.FILE_NAME).write_text('{"protocol_version": 1, "tasks": []}')
    assert task_cache.load(path) == []  # another protocol's list is not misread
    (tmp_path / "sub" / task_cache.FILE_NAME).write_text("{broken")
    assert task_cache.load(path) == []


def test_progress_says_the_step() -> None:
    assert stage_text("upscaling", 3, 12) == "upscaling: step 3 of 12"
    assert stage_text("upscaling", None, None) == "upscaling"
    # the backend's note for the person waiting: a line of its own, after the time
    noted = stage_text("upscaling", 3, 12, "x4plus would take\nabout 5 min; fast, 8 s.")
    assert noted == "upscaling: step 3 of 12\nx4plus would take about 5 min; fast, 8 s."
    assert stage_text("", None, None, "a note") == "working\na note"


def test_layer_names_say_task_model_and_scale() -> None:
    image = to_buffer(np.zeros((2, 2, 4), np.uint8))
    job = JobInput("upscale", image, Bounds(0, 0, 2, 2), Extent(2, 2))

    def result(scale: float, model: str = "tiny-x4") -> JobResult:
        size = round(2 * scale)
        pixels = to_buffer(np.zeros((size, size, 4), np.uint8))
        placement = Placement(Bounds(0, 0, size, size), Extent(size, size), scale, scale)
        return JobResult("j", "upscale", model, [OutputPixels("result", "", pixels, placement)])

    def prepared(in_place: bool) -> PreparedJob:
        return PreparedJob(job, in_place=in_place, title="Upscale")

    assert layer_name(prepared(False), result(4)) == "Upscale x4 - tiny-x4"
    assert layer_name(prepared(False), result(1.5)) == "Upscale x1.5 - tiny-x4"
    assert layer_name(prepared(True), result(1)) == "Upscale selection - tiny-x4"
    assert layer_name(prepared(False), result(1, model="")) == "Upscale"
    named = result(1, model="tiny-ip2p")
    named.details["label"] = "Colorize this black-and-white photo naturally"
    assert layer_name(prepared(True), named) == ("Colorize this black-and-white photo naturally"
                                                 " - tiny-ip2p")  # an edit: what was asked


def test_backend_unavailable_says_how_to_start_it() -> None:
    err = BackendUnavailable.at("http://127.0.0.1:1")
    assert "not running at http://127.0.0.1:1" in err.text and "Start backend" in err.text
