#!/usr/bin/env python3
"""Write benchmarks/RESULTS.md from one ``benchmarks/run``: machine facts, both tables, commands.

Called by ``benchmarks/run`` with the outputs of ``inprocess.py`` (console text) and
``http_bench.py`` (console text, ``--json`` and ``--markdown`` files).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fic_middleware"],
                               cwd=ROOT, text=True, capture_output=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return f"{rev}{' + uncommitted changes in fic_middleware/' if dirty.strip() else ''}" or "?"


def read(path: str | None) -> str:
    if not path:
        return ""
    with open(path) as f:
        return f.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", required=True, help="the command that was run")
    parser.add_argument("--inprocess-text")
    parser.add_argument("--inprocess-command")
    parser.add_argument("--http-json")
    parser.add_argument("--http-markdown")
    parser.add_argument("--http-text")
    parser.add_argument("--http-command")
    args = parser.parse_args(argv)

    http = json.loads(read(args.http_json)) if args.http_json else {}
    import lmdb

    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    facts = [
        ("date", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} (client and servers share them)"),
        ("load average (1, 5, 15 min)",
         f"{http['loadavg_start']} before the HTTP run, {http['loadavg_end']} after it"
         if http.get("loadavg_end") else f"{load} at the end"),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("lmdb", f"py-lmdb {version('lmdb')}, LMDB {'.'.join(map(str, lmdb.version()))}"),
        ("gunicorn", version("gunicorn")),
        ("granian", version("granian")),
        ("uWSGI", f"pyuwsgi {version('pyuwsgi')}"),
        ("whitenoise", version("whitenoise")),
        ("nginx", http.get("nginx") or "not run"),
        ("wrk", http.get("wrk") or "not run"),
        ("fic_middleware", f"{version('fic-middleware')} (git {git_revision()})"),
    ]
    out = [
        "# Benchmark results",
        "",
        f"Written by `{args.command}` (see `benchmarks/README.md`; `docs/PERFORMANCE.md`",
        "explains the figures). Ratios are taken within this one run; absolute numbers depend",
        "on the machine and on what else ran on it.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
    ]
    if args.inprocess_text:
        text = "\n".join(line for line in read(args.inprocess_text).splitlines()
                         if not line.startswith("wrote "))
        out += ["## In process", "", f"`{args.inprocess_command}`", "",
                "Microseconds per request; the figure is `low3` (median of the three fastest",
                "batches).", "", "```", text.strip(), "```", ""]
    if args.http_markdown:
        wrk = http.get("wrk_args", {})
        out += ["## HTTP", "", f"`{args.http_command}`", "",
                f"{http.get('body_bytes', 0):,}-byte PNG; wrk -t{wrk.get('threads')} "
                f"-c{wrk.get('connections')} -d{wrk.get('duration_s')}s --latency, "
                f"{http.get('rounds')} interleaved rounds (shuffled order each round), "
                f"median per variant. Servers, {http.get('workers')} worker processes each: "
                f"gunicorn sync; gunicorn gthread ({http.get('gthreads')} threads each); "
                "granian --interface wsgi (its defaults otherwise); uWSGI (pyuwsgi) master + "
                "processes on --http11-socket (keep-alive); nginx (reference). gunicorn sync "
                "closes the connection after every response, the others keep it alive. "
                "`CPU us/req`: user + system CPU time of the server's processes (master and "
                "workers) during the run / requests served. `vs bare` and the ratios: to the "
                "bare app under the same server (nginx: to gunicorn sync).",
                "", read(args.http_markdown).strip(), ""]
    out += ["## Commands", "", "```sh", args.command]
    if args.inprocess_command:
        out.append(f"  # = {args.inprocess_command}")
    if args.http_command:
        out.append(f"  #   {args.http_command}")
    out += ["```", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {os.path.relpath(args.out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
