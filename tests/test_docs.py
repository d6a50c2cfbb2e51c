"""The docs stay in step with the code: generated files with the option table
(scripts/gen_docs), docs/RESPONSES.md with the Cache-Status values and error classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fic_middleware import errors, responses

ROOT = Path(__file__).resolve().parent.parent


def test_generated_files_match_the_option_table() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_option_is_documented_once() -> None:
    from fic_middleware.config import OPTIONS

    text = (ROOT / "docs" / "CONFIGURATION.md").read_text(encoding="utf-8")
    for option in OPTIONS:
        assert text.count(f"| `{option.name}`") == 1, option.name


RESPONSES = ROOT / "docs" / "RESPONSES.md"


def cache_status_constants() -> list[str]:
    """Every Cache-Status value fic_middleware.responses names."""
    return [v for v in vars(responses).values() if isinstance(v, str) and v.startswith("fic;")]


@pytest.mark.parametrize("value", cache_status_constants())
def test_responses_doc_lists_cache_status(value: str) -> None:
    text = RESPONSES.read_text(encoding="utf-8")
    assert f"`{value}`" in text


def error_classes() -> list[type[errors.RequestError]]:
    """RequestError and every class below it (leaves and the ones raised as they are)."""
    found, todo = [], [errors.RequestError]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("error", [pytest.param(c, id=c.__name__) for c in error_classes()])
def test_responses_doc_lists_error_status(error: type[errors.RequestError]) -> None:
    text = RESPONSES.read_text(encoding="utf-8")
    assert f"| {error.status.value} |" in text
