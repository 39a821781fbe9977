"""The plug-in as users get it: the package's layout, Krita's own importer accepting the zip,
the install into pykrita and kritarc, the standard-library-only rule, and the Krita adapter's
colour-space rules (which need no Krita)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from installer import krita_plugin
from plugin.common.errors import UnsupportedDocument
from plugin.krita.colour import SRGB_PROFILE, ColourSpace, wire_space

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
KRITA_IMPORTER = Path("/usr/share/krita/pykrita/plugin_importer/plugin_importer.py")
HEAVY = ("numpy", "torch", "pydantic", "PIL", "fastapi", "cv2", "httpx")


def editor_python() -> str:
    """The system Python is what Krita embeds and GIMP runs: the realistic one to test with."""
    return str(SYSTEM_PYTHON) if SYSTEM_PYTHON.exists() else sys.executable


def test_the_package_has_krita_layout_and_its_own_shared(tmp_path: Path) -> None:
    tree = krita_plugin.build_tree(tmp_path)
    assert (tree / "restora.desktop").is_file()
    desktop = (tree / "restora.desktop").read_text()
    assert "X-KDE-Library=restora" in desktop and "ServiceTypes=Krita/PythonPlugin" in desktop
    package = tree / "restora"
    for name in ("__init__.py", "Manual.html", "shared/protocol.py", "shared/geometry.py",
                 "common/client.py", "common/job_runner.py", "krita/extension.py"):
        assert (package / name).is_file(), name
    assert (package / "shared" / "protocol.py").read_bytes() == \
        (REPO / "shared" / "protocol.py").read_bytes()
    assert not list(package.rglob("__pycache__"))


def test_the_zip_is_reproducible_and_krita_imports_it(tmp_path: Path) -> None:
    first = krita_plugin.build_zip(tmp_path / "a")
    second = krita_plugin.build_zip(tmp_path / "b")
    assert first.name == "restora-krita.zip"
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert "restora.desktop" in names and "restora/" in names  # the importer needs the folder
    if not KRITA_IMPORTER.exists():
        pytest.fail("Krita is not installed (its plug-in importer is missing): run "
                    "tests/editors/krita.sh, then the tests again.", pytrace=False)
    resources = tmp_path / "krita-resources"
    resources.mkdir()
    done = subprocess.run([editor_python(), KRITA_IMPORTER.name, str(first), str(resources)],
                          cwd=KRITA_IMPORTER.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Imported plugin: Restora" in done.stdout
    assert (resources / "pykrita" / "restora.desktop").is_file()
    assert (resources / "pykrita" / "restora" / "shared" / "protocol.py").is_file()


def test_install_copies_and_enables_without_touching_the_rest(tmp_path: Path) -> None:
    kritarc = tmp_path / "kritarc"
    original = ("[General]\nShowRootLayer=false\n\n[python]\nenable_scripter=true\n"
                "enable_restora=false\n\n[Restora]\nbackend_url=\"http://x:1\"\n")
    kritarc.write_text(original)
    pykrita = tmp_path / "pykrita"
    (pykrita / "restora").mkdir(parents=True)
    (pykrita / "restora" / "stale.py").write_text("old")
    target = krita_plugin.install(pykrita, kritarc)
    assert target == pykrita / "restora" and not (target / "stale.py").exists()
    assert (pykrita / "restora.desktop").is_file()
    text = kritarc.read_text()
    assert text == original.replace("enable_restora=false", "enable_restora=true")
    krita_plugin.install(pykrita, kritarc)  # again: nothing changes
    assert kritarc.read_text() == text

    fresh = tmp_path / "new" / "kritarc"
    krita_plugin.enable_in_kritarc(fresh)
    assert fresh.read_text() == "[python]\nenable_restora=true\n"
    other = tmp_path / "other"
    other.write_text("[General]\na=1\n")
    krita_plugin.enable_in_kritarc(other)
    assert other.read_text() == "[General]\na=1\n\n[python]\nenable_restora=true\n"


def test_the_command_line_builds_the_zip(tmp_path: Path) -> None:
    done = subprocess.run([editor_python(), str(REPO / "installer" / "krita_plugin.py"), "build",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == tmp_path / "restora-krita.zip"


_IMPORT_ALL = """
import importlib, json, pkgutil, sys, sysconfig
root = sys.argv[1]
sys.path.insert(0, root)
package = sys.argv[2]
importlib.import_module(package)
names = []
for sub in ("shared", "common"):
    pkg = importlib.import_module(f"{package}.{sub}")
    for info in pkgutil.iter_modules(pkg.__path__):
        names.append(f"{package}.{sub}.{info.name}")
names.append(f"{package}.krita.colour")
for name in names:
    importlib.import_module(name)
stdlib = sysconfig.get_paths()["stdlib"]
outside = sorted(
    name for name, mod in list(sys.modules.items())
    if getattr(mod, "__file__", None)
    and not mod.__file__.startswith((stdlib, root))
)
print(json.dumps({"imported": names, "modules": sorted(sys.modules), "outside": outside}))
"""


@pytest.mark.parametrize("layout", ["packaged", "repository"])
def test_the_plugin_imports_nothing_but_the_standard_library(tmp_path: Path, layout: str) -> None:
    if layout == "packaged":
        root, package = str(krita_plugin.build_tree(tmp_path)), "restora"
    else:
        root, package = str(REPO), "plugin"
    # -I -S: no user or site packages either, so the stdlib alone must do
    done = subprocess.run([editor_python(), "-I", "-S", "-c", _IMPORT_ALL, root, package],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["imported"]) >= 14
    loaded = set(report["modules"])
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert not any(m.split(".")[0] in ("krita", "PyQt5", "PyQt6") for m in loaded)
    assert report["outside"] == []  # every module came from the stdlib or the plug-in


@pytest.mark.parametrize(("space", "sent", "converted"), [
    (("RGBA", "U8", SRGB_PROFILE), ("RGBA", "U8", SRGB_PROFILE), False),
    (("RGBA", "U8", "AdobeRGB"), ("RGBA", "U8", "AdobeRGB"), False),
    (("RGBA", "U16", SRGB_PROFILE), ("RGBA", "U16", SRGB_PROFILE), False),
    (("RGBA", "U16", "sRGB-elle-V2-g10.icc"), ("RGBA", "U16", SRGB_PROFILE), True),
    (("RGBA", "F32", "Rec2020-elle-V4-g10.icc"), ("RGBA", "U16", SRGB_PROFILE), True),
    (("RGBA", "F16", "scRGB (linear)"), ("RGBA", "U16", SRGB_PROFILE), True),
    (("GRAYA", "U8", "Gray-D50-elle-V2-srgbtrc.icc"),
     ("GRAYA", "U8", "Gray-D50-elle-V2-srgbtrc.icc"), False),
    (("GRAYA", "F32", "Gray-D50-elle-V2-g10.icc"),
     ("GRAYA", "U16", "Gray-D50-elle-V2-srgbtrc.icc"), True),
    (("CMYKA", "U8", "Chemical proof"), ("RGBA", "U8", SRGB_PROFILE), True),
    (("LABA", "U16", "Lab identity"), ("RGBA", "U16", SRGB_PROFILE), True),
])
def test_colour_spaces_travel_as_they_are_or_converted(space, sent, converted) -> None:
    wire = wire_space(ColourSpace(*space))
    assert (wire.space.model, wire.space.depth, wire.space.profile) == sent
    assert wire.converted == converted
    assert wire.channels == (2 if sent[0] == "GRAYA" else 4)
    assert wire.bits == (16 if sent[1] == "U16" else 8)


def test_unknown_colour_models_are_refused_with_a_way_out() -> None:
    with pytest.raises(UnsupportedDocument, match="Convert Image Color Space"):
        wire_space(ColourSpace("WEIRD", "U8", ""))
