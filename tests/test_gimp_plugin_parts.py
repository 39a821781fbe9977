"""The GIMP plug-in's standard-library parts, without GIMP: its procedures and arguments, how
arguments become settings, the option form, the shared settings file, and the installer's
build (a self-contained folder that imports with a bare Python and no numpy or torch).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from plugin.common.settings import DEFAULT_URL, Settings
from plugin.gimp import option_form, store
from plugin.gimp.procedures import (
    BY_NAME,
    PROCEDURES,
    Action,
    BadArgument,
    build_settings,
)
from shared.protocol import ParamInfo, Task

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "installer"))
import gimp_plugin as installer  # noqa: E402

UPSCALE = BY_NAME["restora-upscale-image"]
RESTORE = BY_NAME["restora-restore-selection"]


# --- procedures and arguments ---


def test_every_task_has_a_procedure() -> None:
    names = [spec.name for spec in PROCEDURES]
    assert len(names) == len(set(names))
    assert all(name.startswith("restora-") for name in names)
    tasks = {spec.task for spec in PROCEDURES if spec.action == Action.TASK}
    assert tasks | {Task.UPSCALE} == set(Task)
    assert UPSCALE.action == Action.UPSCALE and RESTORE.action == Action.RESTORE
    choice = RESTORE.argument("task")
    assert choice is not None and [c[0] for c in choice.choices] == [t.value for t in Task]


def test_arguments_are_well_formed() -> None:
    for spec in PROCEDURES:
        arg_names = [a.name for a in spec.arguments]
        assert len(arg_names) == len(set(arg_names)), spec.name
        assert {"model", "options", "backend-url", "token"} <= set(arg_names), spec.name
        for arg in spec.arguments:
            assert arg.kind in ("string", "int", "double", "boolean", "choice")
            if arg.kind in ("int", "double"):
                assert arg.minimum <= arg.default <= arg.maximum, arg
            assert arg.name == arg.name.lower() and "_" not in arg.name  # GIMP's names


def test_upscale_arguments_become_settings() -> None:
    values = {"backend-url": "127.0.0.1:9000", "model": " tiny-x4 ", "scale": 2.0, "tile": 0,
              "options": '{"overlap": 8, "scale": 3}', "new-image": True,
              "sample-merged": True}
    settings, task = build_settings(UPSCALE, values, Settings(), {})
    assert task == Task.UPSCALE
    assert settings.backend_url == "http://127.0.0.1:9000"
    assert settings.model_for(Task.UPSCALE) == "tiny-x4"
    # the typed scale wins over the one in `options`; tile 0 means "automatic": not sent
    assert settings.options_for(Task.UPSCALE) == {"overlap": 8, "scale": 2.0}
    assert settings.upscale_into == "document" and settings.source == "projection"


def test_restore_arguments_become_settings() -> None:
    values = {"task": "upscale", "model": "", "feather": -1.0, "padding": 24, "tile": 64,
              "options": ""}
    settings, task = build_settings(RESTORE, values, Settings(), {})
    assert task == Task.UPSCALE and settings.task == "upscale"
    assert settings.model_for(Task.UPSCALE) is None  # the backend's default
    assert settings.feather is None and settings.padding == 24
    assert settings.options_for(Task.UPSCALE, in_place=True) == {"tile": 64}
    settings, _ = build_settings(RESTORE, {"feather": 0.0, "padding": -1}, Settings(), {})
    assert settings.feather == 0.0 and settings.padding is None  # 0: a hard edge


def test_address_comes_from_argument_then_environment_then_stored() -> None:
    stored = Settings(backend_url="http://10.0.0.2:8765", token="kept")
    env = {"RESTORA_URL": "http://127.0.0.1:7000", "RESTORA_TOKEN": "from-env"}
    settings, _ = build_settings(UPSCALE, {"backend-url": "http://h:1"}, stored, env)
    assert (settings.backend_url, settings.token) == ("http://h:1", "from-env")
    settings, _ = build_settings(UPSCALE, {}, stored, env)
    assert settings.backend_url == "http://127.0.0.1:7000"
    settings, _ = build_settings(UPSCALE, {"token": "given"}, stored, {})
    assert (settings.backend_url, settings.token) == ("http://10.0.0.2:8765", "given")
    settings, _ = build_settings(UPSCALE, {}, Settings(), {})
    assert settings.backend_url == DEFAULT_URL and settings.token == ""


@pytest.mark.parametrize(("spec", "values", "words"), [
    (UPSCALE, {"options": "{overlap: 8"}, "not valid JSON"),
    (UPSCALE, {"options": "[1, 2]"}, "JSON object"),
    (UPSCALE, {"backend-url": "ftp://x"}, "not a backend address"),
    (RESTORE, {"task": "paint-a-cat"}, "not a Restora task"),
])
def test_bad_arguments_are_named(spec, values, words) -> None:
    with pytest.raises(BadArgument) as caught:
        build_settings(spec, values, Settings(), {})
    assert words in caught.value.message


# --- the option form ---

OVERLAP = ParamInfo("overlap", "int", 32)
ALPHA = ParamInfo("alpha", "str", "model", choices=["model", "resize"])
SCALE = ParamInfo("scale", "float", None, optional=True)
FLAG = ParamInfo("fast", "bool", False)


def test_form_shows_only_untyped_params() -> None:
    shown = option_form.form_params([SCALE, OVERLAP, ALPHA], {"scale", "tile"})
    assert shown == [OVERLAP, ALPHA]


def test_form_values_parse_and_merge_back() -> None:
    assert option_form.parse_value(OVERLAP, " 16 ") == 16
    assert option_form.parse_value(OVERLAP, "") is None
    assert option_form.parse_value(SCALE, "1.5") == 1.5
    assert option_form.parse_value(FLAG, "yes") is True
    with pytest.raises(BadArgument, match="overlap must be a whole number"):
        option_form.parse_value(OVERLAP, "lots")
    with pytest.raises(BadArgument, match="choices"):
        option_form.parse_value(ALPHA, "magic")
    old = '{"overlap": 8, "strength": 0.3}'
    merged = option_form.merge_options(old, [OVERLAP, ALPHA], {"overlap": 32, "alpha": "resize"})
    # the default is left out, a key the form does not show is kept
    assert json.loads(merged) == {"alpha": "resize", "strength": 0.3}
    assert option_form.merge_options("", [OVERLAP], {"overlap": None}) == ""
    assert option_form.display_text(OVERLAP, json.loads(old)) == "8"
    assert option_form.parse_options("{broken") == {}


# --- the shared settings file ---


def test_store_round_trip_keeps_only_shared_fields(tmp_path: Path) -> None:
    path = tmp_path / "gimp" / store.FILE_NAME
    assert store.load(str(path)) == Settings()
    store.save(str(path), Settings(backend_url="http://127.0.0.1:9999", token="t",
                                   models={"upscale": "x"}))
    loaded = store.load(str(path))
    assert (loaded.backend_url, loaded.token, loaded.models) == ("http://127.0.0.1:9999", "t", {})
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a token
    path.write_text("{not json")
    assert store.load(str(path)) == Settings()


# --- the installer ---


def test_plugin_folders_per_platform(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert installer.plugin_dirs("linux", {}, home) == [
        home / ".config" / "GIMP" / "3.0" / "plug-ins"]
    (home / ".var" / "app" / "org.gimp.GIMP" / "config").mkdir(parents=True)
    assert installer.plugin_dirs("linux", {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}, home) == [
        tmp_path / "cfg" / "GIMP" / "3.0" / "plug-ins",
        home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0" / "plug-ins"]
    assert installer.plugin_dirs("win32", {"APPDATA": "C:/Users/a/AppData/Roaming"}, home) == [
        Path("C:/Users/a/AppData/Roaming/GIMP/3.0/plug-ins")]
    assert installer.plugin_dirs("darwin", {}, home) == [
        home / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins"]
    assert installer.plugin_dirs("linux", {"GIMP3_DIRECTORY": "/g"}, home) == [
        Path("/g/plug-ins")]


def test_build_is_self_contained(tmp_path: Path) -> None:
    folder = installer.build(tmp_path)
    assert folder == tmp_path / "restora"
    entry = folder / "restora.py"
    assert entry.read_text().startswith("#!/usr/bin/env python3")
    assert os.name != "posix" or entry.stat().st_mode & 0o111 == 0o111
    library = folder / "restora_lib"
    assert sorted(p.name for p in library.iterdir()) == ["__init__.py", "common", "gimp",
                                                         "shared"]
    assert not (library / "gimp" / "restora.py").exists()
    assert not list(folder.rglob("__pycache__"))
    # a bare, isolated Python: no repository on the path, no site-packages
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import restora_lib.gimp.flow, restora_lib.gimp.procedures as p;"
        "import restora_lib.common.client as c, restora_lib.shared.protocol as sp;"
        "assert c.Task is sp.Task;"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'torch', 'pydantic', 'plugin', 'shared', 'backend')];"
        "print(len(p.PROCEDURES), heavy)")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(folder)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(PROCEDURES)), "[]"]


def test_install_replaces_and_uninstall_removes(tmp_path: Path) -> None:
    dest = tmp_path / "plug-ins"
    (dest / "restora" / "restora_lib").mkdir(parents=True)
    (dest / "restora" / "stale.py").write_text("old")
    done = subprocess.run([sys.executable, str(REPO / "installer" / "gimp_plugin.py"),
                           "install", "--dest", str(dest)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Restart GIMP" in done.stdout
    assert not (dest / "restora" / "stale.py").exists()
    assert (dest / "restora" / "restora.py").exists()
    assert [p.name for p in dest.iterdir()] == ["restora"]  # no staging left behind
    assert installer.uninstall(dest) == [dest / "restora"]
    assert not (dest / "restora").exists()
