"""Which Krita colour spaces travel to the backend as they are, and which are converted first.

Models are trained on gamma-encoded RGB, 8 or 16 bits. So:
* RGBA and GRAYA at 8 bits, and at 16 bits with a gamma-encoded profile, are sent as they are
  (Krita's pixelData is BGRA or gray + alpha; 16-bit little-endian);
* 16-bit linear profiles (Krita's default "sRGB-elle-V2-g10" for new 16-bit documents), float
  documents (F16, F32; values beyond 1.0 are clipped) and the other models (CMYKA, LABA, XYZA,
  YCbCrA) are converted by Krita itself into 16-bit (8-bit for 8-bit CMYK...) sRGB, or gray,
  and the result layer is converted back into the document's colour space.
No Krita import here: the rules are unit-tested outside Krita.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.errors import UnsupportedDocument

SRGB_PROFILE = "sRGB-elle-V2-srgbtrc.icc"
GRAY_PROFILE = "Gray-D50-elle-V2-srgbtrc.icc"
CONVERTIBLE_MODELS = ("CMYKA", "LABA", "XYZA", "YCbCrA")
_BITS = {"U8": 8, "U16": 16}


@dataclass(frozen=True)
class ColourSpace:
    model: str  # Krita's colour model id: "RGBA", "GRAYA", "CMYKA"...
    depth: str  # "U8", "U16", "F16", "F32"
    profile: str


@dataclass(frozen=True)
class WireSpace:
    """The Krita colour space whose pixel bytes are sent: either the source's own (no
    conversion) or one Krita converts to first."""

    space: ColourSpace
    converted: bool

    @property
    def channels(self) -> int:
        return 2 if self.space.model == "GRAYA" else 4

    @property
    def bits(self) -> int:
        return _BITS[self.space.depth]


def is_linear(profile: str) -> bool:
    name = profile.lower()
    return "g10" in name or "linear" in name or "scrgb" in name


def wire_space(source: ColourSpace) -> WireSpace:
    """How pixels in `source` travel: as they are, or converted (and which way)."""
    model, depth = source.model, source.depth
    if model in ("RGBA", "GRAYA"):
        if depth == "U8" or (depth == "U16" and not is_linear(source.profile)):
            return WireSpace(source, converted=False)
        if depth in ("U16", "F16", "F32"):
            profile = SRGB_PROFILE if model == "RGBA" else GRAY_PROFILE
            return WireSpace(ColourSpace(model, "U16", profile), converted=True)
    elif model in CONVERTIBLE_MODELS and depth in ("U8", "U16", "F16", "F32"):
        bits = "U8" if depth == "U8" else "U16"
        return WireSpace(ColourSpace("RGBA", bits, SRGB_PROFILE), converted=True)
    raise UnsupportedDocument(
        f"Restora cannot work on {model} {depth} images.",
        "Convert the image to RGB/Alpha (Image > Convert Image Color Space), then try again.")
