"""The shared wire protocol and geometry: standard library only, and lossless JSON round trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.geometry import Bounds, Extent, default_feather, selection_crop
from shared.protocol import (
    RAW_PIXELS_MEDIA_TYPE,
    CatalogModelInfo,
    DownloadInfo,
    DownloadRequest,
    DownloadState,
    ErrorBody,
    EventType,
    Health,
    JobEvent,
    JobRequest,
    JobState,
    JobStatus,
    ModelInfo,
    PixelFormat,
    Placement,
    PresetInfo,
    ProtocolError,
    ResultInfo,
    TaskInfo,
    check_id,
)

ROOT = Path(__file__).resolve().parents[2]


def test_shared_imports_only_the_standard_library() -> None:
    # -S: no site-packages at all, as in an editor's Python without numpy or pydantic
    code = (
        "import sys; sys.path.insert(0, '.'); import shared.protocol, shared.geometry; "
        "bad = {'numpy', 'pydantic', 'torch', 'fastapi'} & set(sys.modules); "
        "print(sorted(bad)); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_job_request_round_trip() -> None:
    req = JobRequest(
        task="upscale",
        image="a" * 64,
        model="m",
        params={"scale": 2},
        mask="b" * 64,
        feather=6.0,
        bounds=Bounds(1, 2, 3, 4),
        canvas=Extent(10, 20),
        id="job-1",
        client="krita-1",
    )
    data = req.to_json()
    assert data["task"] == "upscale" and data["bounds"] == {"x": 1, "y": 2, "width": 3, "height": 4}
    assert JobRequest.from_json(data) == req


def test_status_and_event_round_trip() -> None:
    result = ResultInfo(
        8, 6, 4, 16, Placement(Bounds(2, 4, 8, 6), Extent(20, 12), 2.0, 2.0), expires=123.0
    )
    status = JobStatus(
        id="j",
        client=None,
        task="upscale",
        model="m",
        state=JobState.FINISHED,
        progress=1.0,
        result=result,
    )
    assert JobStatus.from_json(status.to_json()) == status
    event = JobEvent(
        seq=3,
        type=EventType.FAILED,
        job="j",
        client="c",
        time=1.5,
        state=JobState.FAILED,
        error=ErrorBody("code", "message", "hint"),
    )
    assert JobEvent.from_json(event.to_json()) == event


def test_download_messages_round_trip() -> None:
    entry = CatalogModelInfo(
        name="realesrgan-x4plus",
        task="upscale",
        label="Real-ESRGAN x4plus",
        description="photos",
        size_bytes=67040989,
        licence="BSD-3-Clause",
        traits=["photo", "best"],
        recommended=True,
        verified=True,
    )
    assert CatalogModelInfo.from_json(entry.to_json()) == entry
    assert CatalogModelInfo.from_json({"name": "x", "task": "upscale"}).size_bytes is None
    request = DownloadRequest("codeformer", accept_licence=True)
    assert DownloadRequest.from_json(request.to_json()) == request
    assert DownloadRequest.from_json({"name": "x"}).accept_licence is False
    with pytest.raises(ProtocolError, match="accept_licence must be true or false"):
        DownloadRequest.from_json({"name": "x", "accept_licence": "yes"})
    with pytest.raises(ProtocolError, match="model must be a model name"):
        DownloadRequest("").check()
    failed = DownloadInfo(
        id="dl-1",
        name="tiny",
        state=DownloadState.FAILED,
        bytes_done=10,
        bytes_total=None,
        error=ErrorBody("checksum_mismatch", "wrong file", "try again"),
    )
    assert DownloadInfo.from_json(failed.to_json()) == failed
    assert failed.to_json()["state"] == "failed" and failed.state == "failed"
    assert [s.done for s in DownloadState] == [False, False, False, True, True, True]
    with pytest.raises(ProtocolError, match=r"DownloadInfo.state must be one of"):
        DownloadInfo.from_json({"id": "d", "name": "n", "state": "paused"})


def test_presets_and_model_words_are_optional_fields() -> None:
    preset = PresetInfo("fast", "Fast", "quick", {"alpha": "resize"}, ["fast"])
    info = TaskInfo(task="upscale", available=True, presets=[preset])
    assert TaskInfo.from_json(info.to_json()) == info
    # an older server sends none of the new fields: they take their defaults
    old = TaskInfo.from_json({"task": "upscale", "available": True})
    assert old.presets == []
    model = ModelInfo.from_json(
        {"name": "m", "tasks": [], "folder": "upscale_models", "usable": True}
    )
    assert (model.label, model.description, model.traits, model.catalog_name) == ("", "", [], "")
    labelled = ModelInfo("m", ["upscale"], "upscale_models", True, label="M", traits=["fast"])
    assert ModelInfo.from_json(labelled.to_json()) == labelled


def test_from_json_ignores_unknown_keys_and_names_bad_ones() -> None:
    health = Health.from_json(
        {
            "status": "ok",
            "protocol_version": 1,
            "version": "9",
            "auth_required": False,
            "from_the_future": [1, 2],
        }
    )
    assert health.version == "9"
    with pytest.raises(ProtocolError, match=r"JobRequest.image is missing"):
        JobRequest.from_json({"task": "upscale"})
    with pytest.raises(ProtocolError, match=r"JobRequest.task must be a string"):
        JobRequest.from_json({"task": 5, "image": "x"})
    # task ids are open: a task a newer server adds still reads
    assert JobRequest.from_json({"task": "a-future-task", "image": "x"}).task == "a-future-task"
    with pytest.raises(ProtocolError, match=r"JobRequest.bounds.x must be an integer"):
        JobRequest.from_json(
            {"task": "upscale", "image": "x", "bounds": {"x": "1", "y": 0, "width": 1, "height": 1}}
        )
    with pytest.raises(ProtocolError, match=r"must be an object"):
        JobStatus.from_json([])


def test_job_state_done() -> None:
    assert [s.value for s in JobState if s.done] == ["finished", "failed", "cancelled"]


def test_pixel_format_media_type_round_trip() -> None:
    fmt = PixelFormat(640, 480, 4, 16)
    assert PixelFormat.parse(fmt.media_type()) == fmt
    assert fmt.nbytes == 640 * 480 * 4 * 2
    assert PixelFormat.parse(f"{RAW_PIXELS_MEDIA_TYPE};width=2;height=3;channels=1") == PixelFormat(
        2, 3, 1, 8
    )
    for bad in (
        "image/png",
        f"{RAW_PIXELS_MEDIA_TYPE}; width=2; height=3",
        f"{RAW_PIXELS_MEDIA_TYPE}; width=2; height=3; channels=3; depth=32",
        f"{RAW_PIXELS_MEDIA_TYPE}; width=0; height=3; channels=3",
    ):
        with pytest.raises(ProtocolError):
            PixelFormat.parse(bad)


def test_content_id_depends_on_shape_and_bytes() -> None:
    data = bytes(range(24))
    a = PixelFormat(4, 2, 3).content_id(data)
    assert a == PixelFormat(4, 2, 3).content_id(bytearray(data))
    assert a != PixelFormat(2, 4, 3).content_id(data) and len(a) == 64


def test_ids() -> None:
    assert check_id("krita-1.job_2") == "krita-1.job_2"
    for bad in ("", "-x", "a/b", "x" * 65, "a b"):
        with pytest.raises(ProtocolError):
            check_id(bad)


def test_bounds_scaled_to_keeps_the_layer_in_place() -> None:
    b = Bounds(10, 20, 40, 30)
    assert b.scaled_to(80, 60) == Bounds(20, 40, 80, 60)
    assert b.scaled_to(40, 30) == b


def test_bounds_padding_is_clipped_to_the_canvas() -> None:
    canvas = Extent(100, 50)
    assert Bounds(5, 5, 10, 10).padded(8, canvas) == Bounds(0, 0, 23, 23)
    assert Bounds(90, 40, 10, 10).padded(8, canvas) == Bounds(82, 32, 18, 18)
    assert Bounds(0, 0, 10, 10).intersection(Bounds(20, 20, 5, 5)) is None
    assert Bounds(0, 0, 100, 50).contains(Bounds(82, 32, 18, 18))
    assert Bounds(5, 6, 3, 3).relative_to(Bounds(2, 2, 10, 10)) == Bounds(3, 4, 3, 3)


def test_default_feather_and_selection_crop() -> None:
    assert default_feather(Extent(10, 10)) == 4  # the minimum
    assert default_feather(Extent(300, 400)) == 40  # 8% of a 500 px diagonal
    crop = selection_crop(Bounds(100, 100, 300, 400), Extent(1000, 1000))
    assert crop == Bounds(60, 60, 380, 480)
    assert selection_crop(Bounds(0, 0, 50, 50), Extent(60, 60)) == Bounds(0, 0, 60, 60)
