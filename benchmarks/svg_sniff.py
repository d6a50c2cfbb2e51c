#!/usr/bin/env python3
"""The SVG check's cost on a worst-case head against an ordinary SVG head (issue 11, item 7).

The check used to be a regular expression whose repeated-comment group backtracked
exponentially: ``<!---->`` twenty times followed by something other than ``<svg`` took about
a second, each further comment doubling it. ``imagetypes._is_svg`` scans instead; this prints
microseconds per call for

- ``normal``       an SVG with an XML declaration, a comment and a doctype before ``<svg``;
- ``worst 1 KiB``  ``<!---->`` repeated over the 1,024 bytes the fetcher sniffs, then no ``<svg``;
- ``worst N KiB``  the same pattern over ``--kib`` KiB (sniff() alone: shows the time is linear);

and the ratios worst/normal and (worst N KiB)/(worst 1 KiB) per byte. Run from the repository
root: ``.venv/bin/python benchmarks/svg_sniff.py [--kib 64]``.
"""

from __future__ import annotations

import argparse
import timeit

from fic_middleware.imagetypes import SNIFF_BYTES, sniff

NORMAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- Generator: a drawing program -->\n'
          b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
          b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
          b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect/></svg>')


def worst(size: int) -> bytes:
    """Empty comments up to ``size`` bytes, then an element that is not svg."""
    return (b"<!---->" * (size // 7))[: size - 6] + b"<html>"


def per_call(head: bytes, expected: bool) -> float:
    """Microseconds per sniff() call: the best of 7 runs of about 0.2 s each."""
    assert sniff("image/svg+xml", head) is expected
    timer = timeit.Timer(lambda: sniff("image/svg+xml", head))
    number, _ = timer.autorange()
    return min(timer.repeat(7, number)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kib", type=int, default=64, help="size of the large worst case")
    args = parser.parse_args()
    normal = per_call(NORMAL, True)
    small = per_call(worst(SNIFF_BYTES), False)
    large = per_call(worst(args.kib << 10), False)
    print(f"{'head':<14} {'bytes':>8} {'us/call':>10}")
    print(f"{'normal':<14} {len(NORMAL):>8,} {normal:>10.2f}")
    print(f"{'worst 1 KiB':<14} {SNIFF_BYTES:>8,} {small:>10.2f}")
    print(f"{f'worst {args.kib} KiB':<14} {args.kib << 10:>8,} {large:>10.2f}")
    print(f"worst 1 KiB / normal: {small / normal:.1f}x")
    print(f"per byte, worst {args.kib} KiB / worst 1 KiB: "
          f"{(large / (args.kib << 10)) / (small / SNIFF_BYTES):.2f}x (1.0 = linear)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
