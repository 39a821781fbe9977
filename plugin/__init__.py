"""The editor plug-ins: `common/` (any editor, standard library only) and one adapter per editor.

Packaged, this folder becomes the plug-in's own package (`restora/` in Krita's pykrita folder)
with a copy of the repository's `shared/` inside it, so every module reaches the protocol as
`from ..shared import protocol`. In the repository there is no `plugin/shared/`: the lines
below make `plugin.shared` name the top-level `shared` package, so the same relative imports
work here, in the tests, and in the installed plug-in.
"""

import sys

if __name__ + ".shared" not in sys.modules:
    import shared
    import shared.geometry
    import shared.protocol
    import shared.words

    # the same module objects under both names: one Task class, one Bounds class
    sys.modules[__name__ + ".shared"] = shared
    sys.modules[__name__ + ".shared.geometry"] = shared.geometry
    sys.modules[__name__ + ".shared.protocol"] = shared.protocol
    sys.modules[__name__ + ".shared.words"] = shared.words
