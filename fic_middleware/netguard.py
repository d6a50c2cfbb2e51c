"""The address policy, enforced where urllib3 opens sockets.

A host name is resolved once; every address it resolves to must be allowed, and the socket
is connected to one of those checked addresses, so a second (rebinding) lookup never
happens. SNI, certificate checks and the Host header still use the name: only the
connect target changes. urllib3's seam for this is the pool's ``ConnectionCls``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from . import forks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

log = logging.getLogger("fic_middleware")

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IPv4-compatible IPv6 (::a.b.c.d, deprecated by RFC 4291) embeds a v4 address too.
_V4_COMPAT = ipaddress.ip_network("::/96")


# When the fetch running on this thread must end (time.monotonic()), set by the Fetcher: an
# origin that drips its status line and headers a byte at a time is cut there too.
deadline = threading.local()


class _Watchdog:
    """One thread per process that cuts the connections whose fetch ran past its deadline
    while it read the response head. Shared, not a timer thread per fetch: starting a
    thread cost about 250 us of CPU per miss (docs/PERFORMANCE.md, "Misses")."""

    def __init__(self) -> None:
        self.after_fork()
        forks.register(self)

    def after_fork(self) -> None:
        # The parent's thread does not exist here, and its lock may have been held.
        self._cond = threading.Condition(threading.Lock())
        self._watches: dict[object, tuple[float, Callable[[], None]]] = {}
        self._thread: threading.Thread | None = None

    def watch(self, at: float, cut: Callable[[], None]) -> object:
        """Call ``cut()`` at ``at`` (time.monotonic()) unless :meth:`unwatch` comes first."""
        token = object()
        with self._cond:
            self._watches[token] = (at, cut)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fic-deadlines",
                                                args=(self._cond, self._watches), daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def unwatch(self, token: object) -> None:
        with self._cond:
            self._watches.pop(token, None)

    @staticmethod
    def _run(cond: threading.Condition,
             watches: dict[object, tuple[float, Callable[[], None]]]) -> None:
        # Its own condition and table: after_fork() replaces them (the child's thread is new).
        with cond:
            while True:
                now = time.monotonic()
                for token, (at, cut) in list(watches.items()):
                    if at <= now:
                        del watches[token]
                        try:
                            cut()
                        except Exception:  # the thread must outlive any one connection
                            log.exception("cutting a fetch at its deadline failed")
                soonest = min((at for at, _ in watches.values()), default=None)
                cond.wait(None if soonest is None else soonest - now)


_watchdog = _Watchdog()


class ForbiddenAddress(Exception):
    """The target resolved to an address the policy refuses; no packet was sent to it.

    Deliberately not an OSError or urllib3 error: urllib3 must not retry it.
    """


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client address
    if ip in _NAT64 or ip in _V4_COMPAT:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses.

    ``is_global`` alone is not enough: it is True for multicast and for some reserved
    ranges, and says nothing of the v4 address inside mapped/NAT64/6to4/Teredo forms.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = _embedded_v4(ip)
        if inner is not None and not is_public(inner):
            return False
        if ip.is_site_local:
            return False
    elif ip in _CGNAT:
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_unspecified or ip.is_private)


class AddressPolicy:
    """Public addresses, plus the networks an operator exempts (``allowed_networks``)."""

    def __init__(self, allowed_networks: Iterable[Network] = ()) -> None:
        self.allowed_networks = tuple(allowed_networks)

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d on the wire
        return any(ip in net for net in self.allowed_networks) or is_public(ip)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for a TCP connection to host:port."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _GuardedMixin:
    """``_new_conn`` that resolves once, checks, and connects to a checked address."""

    policy: AddressPolicy
    resolver: Resolver
    # Set by urllib3's HTTPConnection.
    _dns_host: str
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    sock: socket.socket | None

    def getresponse(self) -> Any:
        at = getattr(deadline, "at", None)
        if at is None:
            return super().getresponse()  # type: ignore[misc]
        # Each read has read_timeout; the head as a whole gets what is left of the fetch.
        token = _watchdog.watch(at, self._cut)
        try:
            return super().getresponse()  # type: ignore[misc]
        finally:
            _watchdog.unwatch(token)

    def _cut(self) -> None:
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def _new_conn(self) -> socket.socket:
        host = self._dns_host.strip("[]")
        try:
            addresses = self.resolver(host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        refused = [a for a in addresses if not self.policy.allows(a)]
        if refused or not addresses:
            raise ForbiddenAddress(host)
        last: OSError | None = None
        for address in addresses:
            try:
                return create_connection((address, self.port), self.timeout,
                                         source_address=self.source_address,
                                         socket_options=self.socket_options)
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from exc
            except OSError as exc:
                last = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


def guarded_pool_classes(policy: AddressPolicy, resolver: Resolver = system_resolver,
                         ) -> dict[str, type[HTTPConnectionPool]]:
    """Pool classes for ``PoolManager.pool_classes_by_scheme`` that enforce ``policy``."""
    attrs = {"policy": policy, "resolver": staticmethod(resolver)}
    http_conn = type("GuardedHTTPConnection", (_GuardedMixin, HTTPConnection), attrs)
    https_conn = type("GuardedHTTPSConnection", (_GuardedMixin, HTTPSConnection), attrs)
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,),
                      {"ConnectionCls": https_conn}),
    }
