"""Image media types we accept from origins, and the first bytes each one must start with."""

from __future__ import annotations

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

_XML_SPACE = frozenset(b" \t\r\n")  # XML 1.0 §2.3 S
# What may follow the element name in a start tag: white space, ">" or "/>".
_SVG_NAME_END = (b" ", b"\t", b"\r", b"\n", b">", b"/")


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
        return _is_svg(head)
    return False


def _is_svg(head: bytes) -> bool:
    """An XML prolog, then an ``<svg`` root element.

    XML 1.0 §2.8: ``prolog ::= XMLDecl? Misc* (doctypedecl Misc*)?`` where Misc is a
    comment, a processing instruction or white space; the doctype must be ``svg`` and has
    no internal subset. A scanner, not a regular expression: every step moves forward and
    each construct's end is found with one ``find``, so the time is linear in ``head``
    (a backtracking pattern over repeated comments took exponential time).
    """
    pos = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    size = len(head)
    doctype = False
    while True:
        while pos < size and head[pos] in _XML_SPACE:
            pos += 1
        if head.startswith(b"<!--", pos):
            end = head.find(b"-->", pos + 4)
            if end < 0:
                return False
            pos = end + 3
        elif head.startswith(b"<?", pos):  # the XML declaration, or another instruction
            end = head.find(b"?>", pos + 2)
            if end < 0:
                return False
            pos = end + 2
        elif head.startswith(b"<!DOCTYPE", pos) and not doctype:
            end = head.find(b">", pos)
            if end < 0 or b"[" in head[pos:end] or head[pos:end].split()[1:2] != [b"svg"]:
                return False
            doctype = True
            pos = end + 1
        else:
            return head.startswith(b"<svg", pos) and head[pos + 4:pos + 5] in _SVG_NAME_END
