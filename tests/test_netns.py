"""Runs tests/netns in a private network namespace with trap listeners (unshare -rnm)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .servers import ROOT

pytestmark = pytest.mark.slow  # minutes: scripts/test --fast skips it, CI runs it


def test_ssrf_suite_in_a_private_network_namespace() -> None:
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", "--mount",
         sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/netns"],
        cwd=ROOT, env={**os.environ, "NETNS_SUITE": "1"}, capture_output=True, text=True,
        timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 100, summary
