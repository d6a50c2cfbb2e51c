"""The ``fic`` command (also ``python -m fic_middleware``).

Every command takes the middleware's options as ``--name value`` flags (``--cache-dir``,
``--max-bytes``...; ``--config`` names a config file), merged as everywhere else: flags >
``FIC_*`` environment > file > defaults. Exit codes: 0 ok, 1 problems found, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from . import __version__
from .config import OPTIONS, Config
from .options import without_userinfo
from .errors import ConfigError, RequestError
from .middleware import FastImageCache
from .signing import sign_url

T = TypeVar("T")
OK, PROBLEMS, USAGE = 0, 1, 2


def not_found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The app behind ``fic serve``: everything outside the prefix is 404."""
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"not found\n"]


def _progress(items: Iterable[T], total: int | None, what: str) -> Iterator[T]:
    """A progress bar on stderr when tqdm (extra ``cli``) is there and stderr is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    yield from tqdm(items, total=total, desc=what, unit=" entries", file=sys.stderr,
                    disable=None)  # None: off when not a terminal (logs, CI)


def _middleware(args: argparse.Namespace) -> FastImageCache:
    options = {o.name: getattr(args, o.name) for o in OPTIONS
               if getattr(args, o.name, None) is not None}
    return FastImageCache(not_found, **options)


def _print(data: Any, out: IO[str]) -> None:
    out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --- commands ------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace, out: IO[str]) -> int:
    from werkzeug.serving import run_simple

    mw = _middleware(args)
    out.write(f"fic: serving {mw.config.prefix}/ on http://{args.host}:{args.port}/ "
              "(Ctrl-C stops; use gunicorn in production)\n")
    out.flush()
    run_simple(args.host, args.port, mw, threaded=True)
    return OK


def cmd_sign(args: argparse.Namespace, out: IO[str]) -> int:
    config = Config.load(**_given(args, "prefix", "signing_key", "signing_keys",
                                  "signing_key_file", "backend"))
    keys = config.verify_keys
    if not keys:
        raise ConfigError("signing_key: needed to sign (--signing-key or FIC_SIGNING_KEY)")
    if urlsplit(args.url).scheme not in ("http", "https"):
        raise ConfigError("URL: expected an absolute http(s) URL, got "
                          + without_userinfo(repr(args.url)))
    out.write(sign_url(args.url, keys[0], config.prefix) + "\n")
    return OK


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    options = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    options.setdefault("backend", "memory")  # signing needs no cache
    return options


def cmd_stats(args: argparse.Namespace, out: IO[str]) -> int:
    _print(_middleware(args).operations.stats(), out)
    return OK


def cmd_purge(args: argparse.Namespace, out: IO[str]) -> int:
    operations = _middleware(args).operations
    if args.all:
        purged = operations.purge_all()
    elif args.url:
        purged = operations.purge_url(args.url)
    else:
        purged = operations.purge_path(args.path)
    _print({"purged": purged}, out)
    return OK


def cmd_verify(args: argparse.Namespace, out: IO[str]) -> int:
    found = _middleware(args).operations.verify(args.fix, _progress)
    _print(found, out)
    return PROBLEMS if found["corrupt"] else OK


def cmd_warm(args: argparse.Namespace, out: IO[str]) -> int:
    """GET each line of FILE (an absolute URL, or a path under the prefix) through the
    middleware in this process, so the cache holds it before the first client asks."""
    mw = _middleware(args)
    with open(args.file, encoding="utf-8") as fh:
        warmed = mw.operations.warm(fh, mw, _progress)
    _print(warmed, out)
    return PROBLEMS if warmed["failed"] else OK


def cmd_gc(args: argparse.Namespace, out: IO[str]) -> int:
    """Remove entries that can no longer be served, even stale; report the rest."""
    _print(_middleware(args).operations.gc(_progress), out)
    return OK


# --- parser --------------------------------------------------------------------------------

def _option_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("options (as in the README's configuration table)")
    for option in OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        names = [flag, "--config"] if option.name == "config_file" else [flag]
        if option.name == "origin_headers":
            continue  # a mapping: config file or FIC_ORIGIN_HEADERS_<ORIGIN>
        group.add_argument(*names, dest=option.name, metavar="VALUE", help=option.doc)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fic", description="Fast Image Cache: operate a cache.")
    root.add_argument("--version", action="version", version=f"fic-middleware {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _option_flags(sub)
        return sub

    serve = command("serve", "Run a standalone image proxy (a 404 app behind the middleware).")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(run=cmd_serve)
    sign = command("sign", "Print the signed path that serves URL.")
    sign.add_argument("url", metavar="URL")
    sign.set_defaults(run=cmd_sign)
    command("stats", "Print what the cache holds and what it has served.").set_defaults(run=cmd_stats)
    purge = command("purge", "Forget one image, or everything.")
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("--url", help="an absolute origin URL")
    what.add_argument("--path", help="a client path under the prefix")
    what.add_argument("--all", action="store_true", help="every entry")
    purge.set_defaults(run=cmd_purge)
    verify = command("verify", "Check every stored record; exit 1 if any is damaged.")
    verify.add_argument("--fix", action="store_true", help="delete the damaged records")
    verify.set_defaults(run=cmd_verify)
    warm = command("warm", "Fetch the images listed in FILE (URLs or paths, one per line).")
    warm.add_argument("file", metavar="FILE")
    warm.set_defaults(run=cmd_warm)
    command("gc", "Remove entries too old to serve, and unreadable ones.").set_defaults(run=cmd_gc)
    return root


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = out or sys.stdout
    try:
        code: int = args.run(args, out)
        return code
    except (ConfigError, RequestError, ValueError, OSError) as exc:
        sys.stderr.write(f"fic {args.command}: error: {exc}\n")
        return PROBLEMS if isinstance(exc, OSError) else USAGE
    except KeyboardInterrupt:
        return OK
