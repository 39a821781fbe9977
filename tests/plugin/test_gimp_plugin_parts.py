"""The GIMP plug-in's standard-library parts, without GIMP: its procedures, their menu order and
arguments, how arguments become settings, the option form, the shared settings file, the words
about the backend and the progress line, and the installer's build (a self-contained folder
that imports with a bare Python and no numpy or torch).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from plugin.common.catalog import Catalog
from plugin.common.connection import ConnectionState
from plugin.common.errors import BackendUnavailable, PluginError, ProtocolMismatch, Unauthorized
from plugin.common.launcher import BackendNotInstalled, BackendStartFailed
from plugin.common.settings import DEFAULT_URL, Settings
from plugin.gimp import option_form, status, store
from plugin.gimp.procedures import (
    MENU_PATH,
    TASK_ARGUMENTS,
    Action,
    BadArgument,
    backend_address,
    build_settings,
    procedure_name,
    procedures,
    spec_for,
    stored_connection,
    task_of,
)
from plugin.gimp.progress_text import ProgressText
from shared.protocol import Health, ModelInfo, ParamInfo, TaskInfo

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "installer"))
import gimp_plugin as installer  # noqa: E402

TASKS = [
    TaskInfo("denoise", True, title="Denoise", order=30),
    TaskInfo("upscale", True, title="Upscale", order=10, resizes=True),
    # only lacks a model: offered, and its dialog says what is missing
    TaskInfo("face-restore", False, title="Restore faces", order=20, needs_model=True),
    # lacks a package (or a newer backend): not offered
    TaskInfo("refine", False, title="Refine (diffusion)", order=50),
    TaskInfo("test-split", True, title="Split (test)", order=901),
]
PROCEDURES = procedures(TASKS)
UPSCALE = spec_for("restora-upscale-image", TASKS)
RESTORE = spec_for("restora-restore-selection", TASKS)


# --- procedures and arguments ---


def test_procedures_come_from_the_task_list_in_order() -> None:
    assert [(spec.name, spec.title) for spec in PROCEDURES] == [
        ("restora-upscale-image", "Upscale"),  # the name scripts know
        ("restora-face-restore", "Restore faces"),
        ("restora-denoise", "Denoise"),
        ("restora-test-split", "Split (test)"),
        ("restora-restore-selection", "Restore selection"),
        ("restora-settings", "Settings"),
    ]  # refine cannot run (no model would help): not registered
    assert UPSCALE.action == Action.TASK and UPSCALE.task == "upscale"
    assert RESTORE.action == Action.RESTORE and RESTORE.task == ""
    assert procedure_name("face-restore") == "restora-face-restore"
    assert task_of("restora-upscale-image") == "upscale"
    assert task_of("restora-restore-selection") is None and task_of("gimp-x") is None
    assert task_of("restora-settings") is None
    # a task gone from the cache since GIMP started still has its procedure's spec
    gone = spec_for("restora-colorize", [])
    assert gone.task == "colorize" and gone.title == "Colorize"
    # nothing cached yet: Restore selection and Settings
    assert [s.name for s in procedures([])] == ["restora-restore-selection", "restora-settings"]
    with pytest.raises(KeyError):
        spec_for("restora-restore-selection-x!", TASKS)


def test_menu_paths_keep_the_backends_order() -> None:
    """GIMP sorts a menu by path, label and name; the path's section keeps this order."""
    paths = [spec.menu_path for spec in PROCEDURES]
    assert paths == [f"{MENU_PATH}/[{i:03d}]" for i in range(len(PROCEDURES))]
    keys = [f"{spec.menu_path}/{spec.menu_label}{spec.name}" for spec in PROCEDURES]
    assert sorted(keys) == keys  # GIMP's sort key (app/menus/plug-in-menus.c), already sorted
    labels = [spec.menu_label for spec in PROCEDURES]
    assert sorted(labels) != labels  # the labels alone would put Upscale near the end
    assert all(not label[0].isdigit() for label in labels)  # no order in the labels
    assert spec_for("restora-denoise", TASKS).menu_path == PROCEDURES[2].menu_path


def test_arguments_are_well_formed() -> None:
    for spec in PROCEDURES:
        arg_names = [a.name for a in spec.arguments]
        assert len(arg_names) == len(set(arg_names)), spec.name
        assert {"backend-url", "token"} <= set(arg_names), spec.name
        if spec.action != Action.SETTINGS:
            assert {"model", "options"} <= set(arg_names), spec.name
        if spec.action == Action.TASK:  # the same for every task: GIMP checks them
            assert spec.arguments == TASK_ARGUMENTS
        for arg in spec.arguments:
            assert arg.kind in ("string", "int", "double", "boolean")
            if arg.kind in ("int", "double"):
                assert arg.minimum <= arg.default <= arg.maximum, arg
            assert arg.name == arg.name.lower() and "_" not in arg.name  # GIMP's names
            assert ":" not in arg.nick and "automatic" not in arg.nick  # no magic values


def test_upscale_arguments_become_settings() -> None:
    values = {"backend-url": "127.0.0.1:9000", "model": " tiny-x4 ",
              "options": '{"overlap": 8, "scale": 3}', "new-image": True,
              "sample-merged": True}
    settings, task = build_settings(UPSCALE, values, Settings(), {})
    assert task == "upscale"
    assert settings.backend_url == "http://127.0.0.1:9000"
    assert settings.model_for("upscale") == "tiny-x4"
    assert settings.options_for("upscale") == {"overlap": 8, "scale": 3}
    assert settings.upscale_into == "document" and settings.source == "projection"


def test_restore_arguments_become_settings() -> None:
    values = {"task": "upscale", "model": "", "feather": -1.0, "padding": 24,
              "options": '{"tile": 64, "scale": 2}'}
    settings, task = build_settings(RESTORE, values, Settings(), {})
    assert task == "upscale" and settings.task == "upscale"
    assert settings.model_for("upscale") is None  # the backend's default
    assert settings.feather is None and settings.padding == 24
    assert settings.options_for("upscale", in_place=True) == {"tile": 64}
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


def test_settings_arguments_replace_only_what_is_given() -> None:
    stored = Settings(backend_url="http://10.0.0.2:8765", token="kept")
    assert stored_connection(stored, {"backend-url": "", "token": ""}) == Settings(
        backend_url="http://10.0.0.2:8765", token="kept")
    changed = stored_connection(stored, {"backend-url": "box.lan:9000", "token": "new"})
    assert (changed.backend_url, changed.token) == ("http://box.lan:9000", "new")
    with pytest.raises(BadArgument, match="not a backend address"):
        stored_connection(stored, {"backend-url": "my backend"})
    assert backend_address("127.0.0.1:9999") == "http://127.0.0.1:9999"
    assert backend_address("http://[::1]:8765") == "http://[::1]:8765"
    assert backend_address("not an address!") is None and backend_address("ftp://x") is None


@pytest.mark.parametrize(("spec", "values", "words"), [
    (UPSCALE, {"options": "{overlap: 8"}, "not valid JSON"),
    (UPSCALE, {"options": "[1, 2]"}, "JSON object"),
    (UPSCALE, {"backend-url": "ftp://x"}, "not a backend address"),
    (UPSCALE, {"backend-url": "http://a b:1"}, "not a backend address"),
    (RESTORE, {"task": "Paint a cat!"}, "not a Restora task id"),
])
def test_bad_arguments_are_named(spec, values, words) -> None:
    with pytest.raises(BadArgument) as caught:
        build_settings(spec, values, Settings(), {})
    assert words in caught.value.message


# --- the option form ---

OVERLAP = ParamInfo("overlap", "int", 32, label="Tile overlap", minimum=0, maximum=256,
                    step=8, unit="px")
ALPHA = ParamInfo("alpha", "str", "model", choices=["model", "resize"],
                  choice_labels=["through the model", "resized only"])
SCALE = ParamInfo("scale", "float", None, optional=True, minimum=0.05, maximum=16, step=0.5,
                  none_label="the model's own")
STRENGTH = ParamInfo("strength", "float", 1.0, minimum=0.0, maximum=1.0, step=0.05,
                     widget="slider")
FLAG = ParamInfo("fast", "bool", False)


def test_form_ranges_and_choices_come_from_the_spec() -> None:
    assert option_form.form_params([SCALE, OVERLAP, ALPHA], {"scale"}) == [OVERLAP, ALPHA]
    assert option_form.number_range(OVERLAP) == (0.0, 256.0, 8.0)
    assert option_form.number_range(STRENGTH) == (0.0, 1.0, 0.05)
    assert option_form.digits(OVERLAP) == 0 and option_form.digits(STRENGTH) == 2
    assert option_form.digits(SCALE) == 2
    assert option_form.is_number(SCALE) and not option_form.is_number(ALPHA)
    items = option_form.choice_items(ALPHA)
    assert [label for _, label in items] == ["through the model", "resized only"]
    assert option_form.choice_value(ALPHA, items[1][0]) == "resize"
    optional = ParamInfo("mode", "str", None, optional=True, choices=["a"], none_label="auto")
    assert option_form.choice_items(optional)[0] == ("", "auto")
    assert option_form.choice_value(optional, "") is None


def test_form_values_parse_and_merge_back() -> None:
    assert option_form.parse_value(OVERLAP, " 16 ") == 16
    assert option_form.parse_value(OVERLAP, "") is None
    assert option_form.parse_value(SCALE, "1.5") == 1.5
    assert option_form.parse_value(FLAG, "yes") is True
    with pytest.raises(BadArgument, match="Tile overlap must be a whole number"):
        option_form.parse_value(OVERLAP, "lots")
    with pytest.raises(BadArgument, match="choices"):
        option_form.parse_value(ALPHA, "magic")
    old = '{"overlap": 8, "strength": 0.3}'
    merged = option_form.merge_options(old, [OVERLAP, ALPHA], {"overlap": 32, "alpha": "resize"})
    # the default is left out, a key the form does not show is kept
    assert json.loads(merged) == {"alpha": "resize", "strength": 0.3}
    assert option_form.merge_options("", [OVERLAP], {"overlap": None}) == ""
    assert option_form.current(OVERLAP, json.loads(old)) == 8
    assert option_form.current(SCALE, {}) is None
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


# --- words about the backend, and the progress line ---

LOCAL, REMOTE = "http://127.0.0.1:8765", "http://10.0.0.9:8765"
DEVELOPER_WORDS = ("restora serve", "terminal", "backend.json", "--token", "installer/", "`")


def artist_words(text: str) -> str:
    for words in DEVELOPER_WORDS:
        assert words not in text, text
    return text


def catalog(ready: bool = True) -> Catalog:
    health = Health("ok", 2, "1.0", False, ready=ready, device="cuda", device_name="RTX 3060")
    model = ModelInfo("x4", ["upscale"], "upscale_models", True)
    return Catalog(health, TASKS, [model, ModelInfo("x2", ["upscale"], "u", True)])


def test_status_line_in_plain_words() -> None:
    line = status.connection_status(ConnectionState.CONNECTED, catalog(), None, LOCAL, False)
    assert line.text == "Connected to Restora on RTX 3060 (2 models)." and line.connected
    line = status.connection_status(ConnectionState.CONNECTED, catalog(False), None, LOCAL,
                                    False)
    assert "still getting ready" in line.text
    assert status.connection_status(ConnectionState.CONNECTING, None, None, LOCAL,
                                    False).text == "Looking for Restora's backend..."
    down = BackendUnavailable.at(LOCAL)
    line = status.connection_status(ConnectionState.DISCONNECTED, None, down, LOCAL, True)
    # with Start backend beside it, the line says only what is the matter
    assert line.text == "Restora's backend is not running." and line.can_start
    line = status.connection_status(ConnectionState.DISCONNECTED, None, down, LOCAL, False)
    assert not line.can_start and "Filters > Restora > Settings" in artist_words(line.text)
    line = status.connection_status(ConnectionState.DISCONNECTED, None, down, REMOTE, True)
    assert "10.0.0.9:8765" in line.text and "start it there" in artist_words(line.text)
    assert not line.can_start  # not this computer's to start
    assert status.connection_status(ConnectionState.DISCONNECTED, None, None, LOCAL, False,
                                    starting=True).text.startswith("Starting Restora's")


@pytest.mark.parametrize(("error", "words"), [
    (BackendUnavailable.at(LOCAL), "not running"),
    (Unauthorized(f"The backend at {LOCAL} needs a token.", "Enter it (--token)."),
     "needs an access token"),
    (Unauthorized(f"The backend at {LOCAL} refused the token.", ""), "refused the access token"),
    (ProtocolMismatch("Restora's backend 2.0 speaks protocol 3.",
                      "Install the plug-in (installer/krita_plugin.py install)."),
     "not a Restora backend this plug-in can work with"),
    (BackendNotInstalled("... (the installer's backend.json was not found).", "..."),
     "not installed on this computer"),
    (BackendStartFailed("Restora's backend stopped at start (exit code 3).",
                        "Read the log, or start `restora serve` in a terminal."),
     "could not start"),
])
def test_errors_for_artists(error: PluginError, words: str) -> None:
    said = status.for_artists(error, LOCAL)
    assert type(said) is type(error) and words in said.message
    artist_words(said.message)
    if not isinstance(error, BackendStartFailed):  # its hint keeps what the backend said
        artist_words(said.hint)
    other = PluginError("The model ran out of memory.", "Try a smaller tile.")
    assert status.for_artists(other, LOCAL) is other  # the backend's own words stay


def test_missing_model_words() -> None:
    assert status.missing_model(TASKS[2]) == (
        "Restore faces needs a model, and none is installed yet.")


def test_progress_line_says_the_stage_and_the_time() -> None:
    clock = [100.0]
    text = ProgressText("Restora: Upscale", now=lambda: clock[0])
    assert text.update(-1.0, "connecting to the backend") == (
        "Restora: Upscale \u00b7 connecting to the backend \u00b7 0:00 elapsed")
    assert text.tick() is None  # nothing new to show
    clock[0] += 2
    assert text.update(0.1, "upscaling: step 1 of 10") == (
        "Restora: Upscale \u00b7 upscaling: step 1 of 10 \u00b7 0:02 elapsed")
    clock[0] += 4
    line = text.update(0.3, "upscaling: step 3 of 10")
    assert line is not None and "step 3 of 10" in line
    assert line.endswith("0:06 elapsed, about 0:14 left")  # 0.2 in 4 s: 0.7 in 14 s
    clock[0] += 1
    assert text.tick() == line.replace("0:06 elapsed, about 0:14 left",
                                       "0:07 elapsed, about 0:13 left")


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
        "assert c.TaskInfo is sp.TaskInfo;"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'torch', 'pydantic', 'plugin', 'shared', 'backend')];"
        "print(len(p.procedures([sp.TaskInfo('upscale', True)])), heavy)")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(folder)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "[]"]  # upscale, Restore selection, Settings


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
