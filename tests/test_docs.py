"""Generated files stay in step with the option table (scripts/gen_docs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
