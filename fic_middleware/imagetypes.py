"""Image media types we accept from origins, and the first bytes each one must start with."""

from __future__ import annotations

import re

# Aliases seen in the wild, mapped to the registered type we serve.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/vnd.microsoft.icon": "image/x-icon",
    "image/x-ms-bmp": "image/bmp",
}
DEFAULT_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif",
                           "image/bmp", "image/x-icon"})
KNOWN_TYPES = DEFAULT_TYPES | {"image/svg+xml"}
# How many leading bytes sniff() looks at (an SVG may start with a long XML prolog).
SNIFF_BYTES = 1024

_SVG_START = re.compile(rb"\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!DOCTYPE svg[^>]*>\s*)?<svg[\s>]", re.S)


def canonical_type(content_type: str) -> str:
    """``'Image/JPG; charset=x'`` -> ``'image/jpeg'``."""
    media = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(media, media)


def sniff(content_type: str, head: bytes) -> bool:
    """True if ``head`` (the first bytes of the body) matches ``content_type``'s signature."""
    if content_type == "image/png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if content_type == "image/jpeg":
        return head.startswith(b"\xff\xd8\xff")
    if content_type == "image/gif":
        return head.startswith((b"GIF87a", b"GIF89a"))
    if content_type == "image/webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if content_type == "image/avif":
        # ISO BMFF: size, 'ftyp', then the major brand; avif/avis may also be a compatible brand.
        return head[4:8] == b"ftyp" and (b"avif" in head[8:32] or b"avis" in head[8:32])
    if content_type == "image/bmp":
        return head.startswith(b"BM")
    if content_type == "image/x-icon":
        return head.startswith(b"\x00\x00\x01\x00")
    if content_type == "image/svg+xml":
        return _SVG_START.match(head.lstrip(b"\xef\xbb\xbf")) is not None
    return False
