"""pyproject.toml lists its packages by hand (the plug-ins are mapped into backend/): every
package of the repository's backend/ and shared/ must be in the list, or a non-editable
install would lack it while the editable one used by the tests has it."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def test_every_package_is_listed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("backend", "shared")
        for init in (REPO / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= listed, sorted(found - listed)
    # and each mapped folder exists, so the plug-in builders find their sources
    for package, folder in config["package-dir"].items():
        assert package in listed and (REPO / folder).is_dir(), (package, folder)
