"""Magic bytes: what each allowed type must start with; the SVG prolog scan is linear."""

from __future__ import annotations

import pytest

from fic_middleware.imagetypes import sniff

from .conftest import SVG

XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>'
DOCTYPE = (b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
           b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">')


@pytest.mark.parametrize("head", [
    pytest.param(SVG, id="the test origin's SVG"),
    pytest.param(b"<svg>", id="bare"),
    pytest.param(b'<svg xmlns="http://www.w3.org/2000/svg">', id="attribute"),
    pytest.param(b"<svg\n  width='1'>", id="newline"),
    pytest.param(b"<svg/>", id="empty element"),
    pytest.param(b"\xef\xbb\xbf<svg>", id="BOM"),
    pytest.param(b" \t\r\n<svg>", id="leading whitespace"),
    pytest.param(XML_DECL + b"\n<svg>", id="XML declaration"),
    pytest.param(b"\xef\xbb\xbf" + XML_DECL + b"<svg>", id="BOM and declaration"),
    pytest.param(b"<!-- made by hand -->\n<svg>", id="comment"),
    pytest.param(b"<!---->" * 3 + b"<svg>", id="empty comments"),
    pytest.param(b"<!-- <svg> in a comment -->\n<svg>", id="markup in a comment"),
    pytest.param(XML_DECL + b"\n" + DOCTYPE + b"\n<svg>", id="doctype"),
    pytest.param(XML_DECL + b"<!-- a -->" + DOCTYPE + b"<!-- b --><svg>", id="comments around the doctype"),
    pytest.param(b'<?xml-stylesheet href="a.css"?><svg>', id="processing instruction"),
    pytest.param(b"<!DOCTYPE svg><svg>", id="short doctype"),
])
def test_svg_heads_that_pass(head: bytes) -> None:
    assert sniff("image/svg+xml", head)


@pytest.mark.parametrize("head", [
    pytest.param(b"", id="empty"),
    pytest.param(b"<html><svg>", id="html"),
    pytest.param(b"<svgx>", id="other element"),
    pytest.param(b"<svg", id="cut short"),
    pytest.param(b"<SVG>", id="upper case"),
    pytest.param(b"text<svg>", id="text first"),
    pytest.param(b"<!-- never closed <svg>", id="unclosed comment"),
    pytest.param(b"<?xml version='1.0'<svg>", id="unclosed declaration"),
    pytest.param(b"<!DOCTYPE html><svg>", id="other doctype"),
    pytest.param(b"<!DOCTYPE svg [<!ENTITY x 'y'>]><svg>", id="internal subset"),
    pytest.param(DOCTYPE + DOCTYPE + b"<svg>", id="two doctypes"),
    pytest.param(b"<!-->\n<svg>", id="comment opener only"),
    pytest.param(b"\xef\xbb\xbf\xef\xbb\xbf<svg>", id="two BOMs"),
])
def test_svg_heads_that_fail(head: bytes) -> None:
    assert not sniff("image/svg+xml", head)


@pytest.mark.parametrize("head, is_svg", [
    pytest.param(b"<!---->" * 5000 + b"<svg>", True, id="then svg"),
    pytest.param(b"<!---->" * 5000 + b"<html>", False, id="then html"),
    pytest.param(b"<!--" + b"-" * 30000 + b"<svg>", False, id="one unclosed comment"),
    pytest.param(b"<?" * 10000 + b"<svg>", False, id="unclosed instructions"),
])
def test_svg_worst_case_heads_get_the_right_answer(head: bytes, is_svg: bool) -> None:
    """Backtracking made these exponential; how long they take is measured by
    benchmarks/svg_sniff.py, not here."""
    assert sniff("image/svg+xml", head) is is_svg
