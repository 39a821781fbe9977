"""Where the editor plug-ins' builders (installer/krita_plugin.py, installer/gimp_plugin.py)
and the sources they package (plugin/, shared/) are, for `restora plugin ...`.

An installed Restora carries copies of them in this package (pyproject.toml maps the
repository's folders here, laid out as in a checkout); an editable install or a checkout uses
the repository's own files.
"""

from __future__ import annotations

from pathlib import Path

from backend.errors import InvalidParameterError

EDITORS = ("krita", "gimp")
_BUNDLE = Path(__file__).resolve().parent
_CHECKOUT = _BUNDLE.parent.parent


def builder_script(editor: str) -> Path:
    """The plug-in builder of `editor`: the installed copy first, else the checkout's."""
    if editor not in EDITORS:
        raise InvalidParameterError(
            f"There is no plug-in for '{editor}'.", f"Use one of: {', '.join(EDITORS)}."
        )
    name = f"{editor}_plugin.py"
    for root in (_BUNDLE, _CHECKOUT):
        script = root / "installer" / name
        if script.is_file() and (root / "plugin" / editor).is_dir():
            return script
    raise InvalidParameterError(
        f"This Restora has no {editor} plug-in sources (looked in {_BUNDLE} and {_CHECKOUT}).",
        "Reinstall Restora from its source folder: python3 installer/setup.py",
    )
