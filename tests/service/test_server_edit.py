"""The edit task through the real server on loopback, as a plug-in sends it: the layer, a
selection and a reference image uploaded, a preset's options in the job, the seed reported,
outside the selection nothing; a tiny Qwen-Image-Edit-2509 in ComfyUI's split files."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from backend.tasks import edit
from backend.tasks.colorize import luma
from tests import edit_zoo
from tests import server_fixtures as fx


@pytest.fixture(scope="module")
def edit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fx.LiveServer]:
    from backend.diffusion import edit_run

    root = tmp_path_factory.mktemp("server-edit-models")
    home = tmp_path_factory.mktemp("server-edit-home")
    edit_zoo.qwen_split_files(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESTORA_HOME", str(home))
        mp.delenv("RESTORA_MODELS", raising=False)
        mp.setattr(edit_run, "CONDITION_AREA", 56 * 56)  # quicker; the server runs in-process
        with fx.live_server(fx.test_settings(fx.ModelsSetup(root, home))) as live:
            yield live


def test_the_server_offers_the_edit_task_with_its_presets_and_images(
    edit_server: fx.LiveServer,
) -> None:
    import httpx

    tasks = {t["task"]: t for t in httpx.get(f"{edit_server.url}/v1/tasks").json()}
    info = tasks["edit"]
    assert [p["name"] for p in info["presets"]] == [p.name for p in edit.SPEC.presets]
    assert [i["name"] for i in info["images"]] == ["reference_1", "reference_2"]
    assert info["available"]


def test_colorize_a_selection_through_the_server(
    edit_server: fx.LiveServer, astronaut: np.ndarray
) -> None:
    gray = np.ascontiguousarray(astronaut[::8, ::8].mean(axis=2, keepdims=True).astype(np.uint8))
    mask = np.zeros((*gray.shape[:2], 1), np.uint8)
    mask[10:40, 12:44] = 255
    client = fx.Client(edit_server.url)
    try:
        params = {**edit.SPEC.preset("colorize").params, "steps": 2, "working_size": 64}
        job = client.submit(
            gray, mask, task="edit", model="tiny-qwen-edit-2509", params=params,
            images={"reference_1": client.upload(np.ascontiguousarray(astronaut[::16, ::16]))},
        )  # fmt: skip
        status = client.wait(job["id"], timeout=120)
        assert status["state"] == "finished", status
        layer = client.result(job["id"])
    finally:
        client.close()
    assert layer.shape == (*gray.shape[:2], 4)
    assert not layer[..., 3][mask[..., 0] == 0].any()  # nothing outside the selection
    inside = layer[15:35, 18:38]
    assert np.abs(luma(inside[..., :3].astype(np.float32)) - gray[15:35, 18:38, 0]).max() <= 1.0
