"""Filters > Restora in the whole GIMP 3.0.4 (on Xvfb): the tasks GIMP registered at its start
from the last task list seen (no backend answers here), which of them, and in which order the
menu shows them.

GIMP sorts the items it knows at its start by menu path, label and procedure name, whatever the
order of registration; the plug-in's menu paths end in a section named after each task's place
in the backend's order (procedures.py). The order the menu shows is read from GIMP's own log of
how it built its menus (GIMP_LOG=menus: "adding menu item for 'NAME' (@ PATH)", in the order
the items are added, which is the order they appear in).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from plugin.common import task_cache
from shared.protocol import TaskInfo
from tests.gimp.harness import HERE, gimp_home_with_plugin, gimp_root, virtual_display
from tests.server_fixtures import free_port

#: the last task list the plug-in saw, out of order, with one task no model would help
CACHED = [
    TaskInfo("denoise", True, title="Denoise", order=30),
    TaskInfo("colorize", False, title="Colorize", order=50, needs_model=True,
             reason="Colorize needs a model, and none is installed."),
    TaskInfo("upscale", True, title="Upscale", order=10, resizes=True),
    TaskInfo("video-upscale", False, title="Upscale video", order=15,
             reason="Needs a package this backend lacks."),
    TaskInfo("defects", True, title="Find scratches and dust", order=40),
    TaskInfo("face-restore", False, title="Restore faces", order=20, needs_model=True),
]
MENU_ORDER = ["restora-upscale-image", "restora-face-restore", "restora-denoise",
              "restora-defects", "restora-colorize", "restora-restore-selection",
              "restora-settings"]
ADDED = re.compile(r"adding menu item for '(restora-[a-z-]+)' \(@ ([^)]*)\)")


@pytest.fixture(scope="module")
def started() -> Iterator[dict[str, Any]]:
    with virtual_display((1366, 768)) as display, \
            gimp_home_with_plugin(gimp_root()) as home:
        config = home.on_host / ".config" / "GIMP" / "3.0"
        config.mkdir(parents=True, exist_ok=True)
        task_cache.save(str(config / task_cache.FILE_NAME), CACHED)
        (config / "gimprc").write_text("(show-welcome-dialog no)\n")
        env = {"RESTORA_URL": f"http://127.0.0.1:{free_port()}", "GIMP_LOG": "menus"}
        found = home.batch(HERE / "gimp_menu_batch.py", env, "menu.json", display=display,
                           gui=True)
        # GIMP builds the image window's menu bar once: every item appears once there
        found["added"] = [(name, path) for name, path in ADDED.findall(found["_log"])]
        yield found


def test_only_tasks_that_can_run_are_registered(started: dict[str, Any]) -> None:
    registered = started["procedures"]
    assert "restora-video-upscale" not in registered  # no model would make it run
    assert set(registered) == set(MENU_ORDER)
    assert registered["restora-colorize"]["label"] == "Colorize..."  # lacks only a model
    assert registered["restora-upscale-image"]["label"] == "Upscale..."
    assert registered["restora-settings"]["label"] == "Se_ttings..."


def test_menu_shows_the_backends_order(started: dict[str, Any]) -> None:
    added = started["added"]
    names = list(dict.fromkeys(name for name, _ in added))
    assert names == MENU_ORDER, started["_log"][-3000:]
    # all in Filters > Restora itself: the section names add no submenu and no label
    assert {path.rsplit("/", 1)[0] for _, path in added} == {"/Filters/Restora"}
