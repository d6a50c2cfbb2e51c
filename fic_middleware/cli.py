"""The ``fic`` command (also ``python -m fic_middleware``).

Each command takes the middleware options it uses as ``--name value`` flags (``--cache-dir``,
``--max-bytes``...; ``--config`` names a config file), merged as everywhere else: flags >
``FIC_*`` environment > file > defaults; the options a command does not list still come from
the environment or the file. Exit codes: 0 ok, 1 problems found, 2 usage or configuration
error.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from . import __version__
from .config import OPTIONS, Config
from .options import Option, shown_default, without_userinfo
from .errors import ConfigError, RequestError
from .middleware import FastImageCache
from .signing import sign_url

T = TypeVar("T")
OK, PROBLEMS, USAGE = 0, 1, 2

# The options each command reads, in the groups its --help shows.
_STORE = ("config_file", "cache_dir")
_SEALED = ("encryption_key", "encryption_key_file")  # to read records written with a key
_CACHE = (*_STORE, "backend", "max_bytes", "max_entries", "eviction", *_SEALED)
_SIGNING = ("signing_key", "signing_keys", "signing_key_file")
_ROUTING = ("prefix", "origins", "forward_query", "allowed_hosts", *_SIGNING)
_FETCH = ("allowed_networks", "max_image_bytes", "allowed_types", "connect_timeout",
          "read_timeout", "total_timeout", "retries", "max_redirects", "verify_tls",
          "ca_bundle", "max_inflight_fetches", "lock_timeout", "breaker_failures",
          "breaker_cooldown")
_FRESHNESS = ("default_ttl", "min_ttl", "max_ttl", "client_max_age", "stale_while_revalidate",
              "stale_if_error", "negative_ttl", "negative_max_entries")
_SERVING = ("admin_token", "admin_token_file", "redis_url", "redis_key", "redis_key_file",
            "miss_rate", "miss_burst", "client_ipv4_prefix", "client_ipv6_prefix",
            "trusted_proxies")
_GROUPS = {"cache": _CACHE, "origins and URLs": _ROUTING, "origin fetches": _FETCH,
           "freshness": _FRESHNESS, "serving": _SERVING}


class UsageError(Exception):
    """A command used wrongly (exit 2): a missing file or cache, a missing option."""


def not_found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The app behind ``fic serve``: everything outside the prefix is 404."""
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"not found\n"]


def standalone() -> FastImageCache:
    """``fic serve`` as a WSGI app for a production server, configured from ``FIC_*``
    variables (or ``FIC_CONFIG_FILE``): ``gunicorn 'fic_middleware.cli:standalone()'``."""
    return FastImageCache(not_found)


def _progress(items: Iterable[T], total: int | None, what: str) -> Iterator[T]:
    """A progress bar on stderr when tqdm (extra ``cli``) is there and stderr is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    yield from tqdm(items, total=total, desc=what, unit=" entries", file=sys.stderr,
                    disable=None)  # None: off when not a terminal (logs, CI)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {o.name: getattr(args, o.name) for o in OPTIONS
            if getattr(args, o.name, None) is not None}


def _middleware(args: argparse.Namespace) -> FastImageCache:
    return FastImageCache(not_found, **_options(args))


def _existing(args: argparse.Namespace) -> FastImageCache:
    """The middleware over a cache that must exist already: a command that reads or trims a
    cache must not create an empty one where a mistyped directory points."""
    options = _options(args)
    # With the memory backend nothing is created: the merged options, cache_dir included.
    cache_dir = Config.load(**{**options, "backend": "memory"}).cache_dir
    if cache_dir is not None and not os.path.isfile(os.path.join(cache_dir, "data.mdb")):
        raise UsageError(f"no cache at {cache_dir}")
    return FastImageCache(not_found, **options)


def _print(data: Any, out: IO[str]) -> None:
    out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --- commands ------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace, out: IO[str]) -> int:
    from werkzeug.serving import run_simple

    mw = _middleware(args)
    origins = ", ".join(f"{name}={base}" for name, base in mw.config.origins.items())
    out.write(f"fic: serving {mw.config.prefix}/ on http://{args.host}:{args.port}/ "
              f"(origins: {origins or 'none, remote URLs only if signed'}; Ctrl-C stops)\n")
    out.flush()
    run_simple(args.host, args.port, mw, threaded=True)
    return OK


def cmd_sign(args: argparse.Namespace, out: IO[str]) -> int:
    options = _options(args)
    options.setdefault("backend", "memory")  # signing needs no cache
    config = Config.load(**options)
    keys = config.verify_keys
    if not keys:
        raise UsageError("signing_key: needed to sign (--signing-key or FIC_SIGNING_KEY)")
    if urlsplit(args.url).scheme not in ("http", "https"):
        raise UsageError("URL: expected an absolute http(s) URL, got "
                         + without_userinfo(repr(args.url)))
    out.write(sign_url(args.url, keys[0], config.prefix) + "\n")
    return OK


def cmd_stats(args: argparse.Namespace, out: IO[str]) -> int:
    _print(_existing(args).operations.stats(), out)
    return OK


def cmd_purge(args: argparse.Namespace, out: IO[str]) -> int:
    mw = _existing(args)
    operations = mw.operations
    if args.all:
        purged = operations.purge_all()
    elif args.url:
        purged = operations.purge_url(args.url)
    else:
        _check_origin(mw.config, args.path)
        purged = operations.purge_path(args.path)
    _print({"purged": purged}, out)
    return OK


def _check_origin(config: Config, path: str) -> None:
    """A mapped path names its origin: say how to configure it rather than 'unknown origin'."""
    kind, _, rest = path.removeprefix(config.prefix + "/").partition("/")
    name = rest.partition("/")[0]
    if kind == "o" and name not in config.origins:
        known = ", ".join(sorted(config.origins)) or "none are configured"
        raise UsageError(f"{path} names the origin {name!r}, which is not configured here "
                         f"(origins: {known}); give the cache's origins with --origins "
                         f"{name}=URL, FIC_ORIGINS or --config FILE")


def cmd_verify(args: argparse.Namespace, out: IO[str]) -> int:
    found = _existing(args).operations.verify(args.fix, _progress)
    _print(found, out)
    return PROBLEMS if found["corrupt"] else OK


def cmd_warm(args: argparse.Namespace, out: IO[str]) -> int:
    """GET each line of FILE (an absolute URL, or a path under the prefix) through the
    middleware in this process, so the cache holds it before the first client asks."""
    try:
        with open(args.file, encoding="utf-8") as fh:
            lines = fh.readlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file} ({getattr(exc, 'strerror', None) or exc})"
                         ) from None
    mw = _middleware(args)
    warmed = mw.operations.warm(lines, mw, _progress)
    _print(warmed, out)
    return PROBLEMS if warmed["failed"] else OK


def cmd_gc(args: argparse.Namespace, out: IO[str]) -> int:
    """Remove entries that can no longer be served, even stale; report the rest."""
    _print(_existing(args).operations.gc(_progress), out)
    return OK


# --- parser --------------------------------------------------------------------------------

def _metavar(option: Option) -> str:
    if option.name == "origins":
        return "NAME=URL,..."
    if option.name.endswith(("_file", "_dir", "_bundle")):
        return "PATH"
    kind = option.kind.rstrip("?")
    return {"bool": "BOOL", "duration": "DURATION", "size": "SIZE", "int": "N",
            "number": "NUMBER", "list": "LIST"}.get(kind, "VALUE")


def _add_options(parser: argparse.ArgumentParser, groups: Mapping[str, Sequence[str]]) -> None:
    """Every option is a flag of every command, as every FIC_* variable applies to each, so
    one set of flags serves them all; --help shows only those the command uses."""
    by_name = {o.name: o for o in OPTIONS if o.name != "origin_headers"}  # a mapping: file/env
    used = {name for names in groups.values() for name in names}
    for title, names in groups.items():
        group = parser.add_argument_group(title)
        for name in names:
            _add_flag(group, by_name[name], shown=True)
    for option in by_name.values():
        if option.name not in used:
            _add_flag(parser, option, shown=False)


def _add_flag(parser: argparse._ActionsContainer, option: Option, shown: bool) -> None:
    flag = "--" + option.name.replace("_", "-")
    flags = ["--config", flag] if option.name == "config_file" else [flag]
    default = shown_default(option)
    help = option.doc + (f" (default: {default})" if default else "")
    parser.add_argument(*flags, dest=option.name, metavar=_metavar(option),
                        help=help if shown else argparse.SUPPRESS)


class _Parser(argparse.ArgumentParser):
    def unrecognized(self, extras: list[str]) -> NoReturn:
        """Name what was not understood, with the closest flags of this command."""
        known = [s for action in self._actions for s in action.option_strings]
        hints = []
        for word in extras:
            if word.startswith("-"):
                hints += difflib.get_close_matches(word.partition("=")[0], known, n=1)
        hint = f" (did you mean {' or '.join(dict.fromkeys(hints))}?)" if hints else ""
        self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


_SERVE_HELP = """\
Run a standalone image cache in front of any site: one command, no app of yours.

  fic serve --origins cdn=https://images.example.com --cache-dir /var/cache/fic

serves https://images.example.com/a/cat.jpg as http://127.0.0.1:8080/_fic/o/cdn/a/cat.jpg
(origins name=URL, comma-separated; FIC_ORIGINS works too). Every other path is 404.
It runs werkzeug's threaded server; in production run the same app under gunicorn:
FIC_ORIGINS=... FIC_CACHE_DIR=... gunicorn -w 4 'fic_middleware.cli:standalone()'
"""


def _parsers() -> tuple[_Parser, dict[str, _Parser]]:
    root = _Parser(prog="fic", description="Fast Image Cache: run and operate a cache.",
                   epilog="Options a command does not list come from FIC_* environment "
                          "variables or --config FILE. 'fic COMMAND --help' lists its options.")
    root.add_argument("--version", action="version", version=f"fic-middleware {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                   parser_class=_Parser)
    subs: dict[str, _Parser] = {}

    def command(name: str, help: str, groups: Mapping[str, Sequence[str]],
                description: str | None = None, usage: str = "") -> _Parser:
        sub: _Parser = commands.add_parser(
            name, help=help, description=description or help,
            usage=f"%(prog)s {usage}[options]", formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_options(sub, groups)
        subs[name] = sub
        return sub

    serve = command("serve", "Run a standalone image cache in front of any site.", _GROUPS,
                    _SERVE_HELP)
    server = serve.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s)")
    server.add_argument("--port", type=int, default=8080, help="(default: %(default)s)")
    serve.set_defaults(run=cmd_serve)
    sign = command("sign", "Print the signed path that serves URL.",
                   {"signing": ("config_file", "prefix", *_SIGNING)}, usage="URL ")
    sign.add_argument("url", metavar="URL")
    sign.set_defaults(run=cmd_sign)
    command("stats", "Print what the cache holds and what it has served.",
            {"cache": _STORE}).set_defaults(run=cmd_stats)
    purge = command("purge", "Forget one image, or everything.",
                    {"cache": _STORE, "origins and URLs": _ROUTING},
                    usage="(--url URL | --path PATH | --all) ")
    what = purge.add_argument_group("what to forget (one of)").add_mutually_exclusive_group(
        required=True)
    what.add_argument("--url", help="an absolute origin URL")
    what.add_argument("--path", help="a client path under the prefix (needs the origins)")
    what.add_argument("--all", action="store_true", help="every entry")
    purge.set_defaults(run=cmd_purge)
    verify = command("verify", "Check every stored record; exit 1 if any is damaged.",
                     {"cache": (*_STORE, *_SEALED)})
    verify.add_argument("--fix", action="store_true", help="delete the damaged records")
    verify.set_defaults(run=cmd_verify)
    warm = command("warm", "Fetch the images listed in FILE (URLs or paths, one per line).",
                   {"cache": _CACHE, "origins and URLs": _ROUTING, "origin fetches": _FETCH,
                    "freshness": _FRESHNESS}, usage="FILE ")
    warm.add_argument("file", metavar="FILE")
    warm.set_defaults(run=cmd_warm)
    command("gc", "Remove entries too old to serve, and unreadable ones.",
            {"cache": (*_STORE, *_SEALED),
             "freshness": ("stale_while_revalidate", "stale_if_error")}).set_defaults(run=cmd_gc)
    return root, subs


def parser() -> argparse.ArgumentParser:
    """The ``fic`` argument parser."""
    return _parsers()[0]


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    root, subs = _parsers()
    args, extras = root.parse_known_args(argv)
    if extras:  # the command's usage, not the top level's
        subs[args.command].unrecognized(extras)
    out = out or sys.stdout
    try:
        code: int = args.run(args, out)
        return code
    except (ConfigError, RequestError, ValueError, UsageError, OSError) as exc:
        sys.stderr.write(f"fic {args.command}: error: {exc}\n")
        return PROBLEMS if isinstance(exc, OSError) else USAGE
    except KeyboardInterrupt:
        return OK
