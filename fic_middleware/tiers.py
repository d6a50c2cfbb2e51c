"""Where entries live: this host's LMDB (L1: images, and remembered 404/410s in a store of
their own) and, when ``redis_url`` is set, the Redis tier shared by the hosts (L2).

Every read, write and delete that spans tiers goes through :class:`Tiers`; the cache above
decides what to serve and what to store, never where. A failing store is logged and the
request goes on (a read that fails is a miss, a write that fails is served unstored).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator

from .imagetypes import SNIFF_BYTES, sniff
from .metrics import Stats
from .purgelog import PurgeLog
from .record import VARIES, CorruptRecord, Entry, Reader, Sealer, UnknownRecord, encode
from .redis_tier import RedisTier
from .storage import Storage

log = logging.getLogger("fic_middleware")


class Tiers:
    """L1 (``storage`` and ``negatives``) and the optional L2 (``shared``).

    The hit path reads ``storage.get(key, reader.decode)`` directly (bound once by the
    cache): a fresh L1 hit takes no call through here.
    """

    def __init__(self, storage: Storage, negatives: Storage, shared: RedisTier | None,
                 reader: Reader, stats: Stats, allowed_types: Collection[str]) -> None:
        self.storage = storage
        self.negatives = negatives  # remembered 404/410s, with a budget of their own
        self.shared = shared
        self.reader = reader
        self.stats = stats
        self._allowed_types = allowed_types
        self.purges: PurgeLog | None = None  # with redis_url: purges reach the other hosts

    @property
    def sealer(self) -> Sealer | None:
        return self.reader.sealer

    # --- reads ---

    def unreadable(self, key: bytes, exc: Exception, storage: Storage | None = None) -> None:
        """A read that failed is a miss; a corrupt record is also deleted and counted."""
        if isinstance(exc, UnknownRecord):  # another release's format: replaced on store
            return
        if isinstance(exc, CorruptRecord):
            self.stats.corrupt += 1
            log.warning("dropping a corrupt cache record (%s)", exc)
            self._delete(key, storage or self.storage)
        else:  # the storage failing must not fail the request: fetch instead
            log.error("cache read failed", exc_info=exc)

    def local(self, key: bytes) -> Entry | None:
        """The image entry in L1, or None (a failed read is a miss)."""
        try:
            return self.storage.get(key, self.reader.decode)
        except Exception as exc:
            self.unreadable(key, exc)
            return None

    def negative(self, key: bytes) -> Entry | None:
        """A remembered 404/410 for ``key``, if any (asked only when there is no image)."""
        try:
            return self.negatives.get(key, self.reader.decode)
        except Exception as exc:
            self.unreadable(key, exc, self.negatives)
            return None

    def from_shared(self, key: bytes) -> Entry | None:
        """An entry from the Redis tier, checked like any record and kept in L1 too."""
        if self.shared is None:
            return None
        try:
            record = self.shared.get(key)
            if record is None:
                return None
            entry = self.reader.decode(key, record)
            # A Vary: Accept marker has no body (record.VARIES); everything else is an image.
            if not entry.negative and not entry.flags & VARIES and not self._acceptable(entry):
                raise CorruptRecord("not an allowed image of its type")
        except CorruptRecord as exc:
            self.stats.corrupt += 1
            log.warning("dropping a corrupt record from the redis tier (%s)", exc)
            self.shared.delete(key)
            return None
        self._put_l1(key, record, entry.expires_at, self.negatives if entry.negative else None)
        return entry

    def _acceptable(self, entry: Entry) -> bool:
        """What came over the network from another host passes the checks a fetch does."""
        return entry.content_type in self._allowed_types and \
            sniff(entry.content_type, entry.body[:SNIFF_BYTES])

    def scan(self) -> Iterator[tuple[Storage, bytes, bytes]]:
        """Every (store, key, record) of this host, images then remembered 404s."""
        for storage in (self.storage, self.negatives):
            for key, record in storage.scan():
                yield storage, key, record

    def entries(self) -> int:
        return self.storage.stats()["entries"] + self.negatives.stats()["entries"]

    # --- writes ---

    def put(self, key: bytes, entry: Entry, now: float) -> bool:
        """Store ``entry`` in both tiers (a negative one in the negative store); whether
        this host kept it (False: over its budget, or the disk said no)."""
        record = encode(entry, key, self.reader.sealer)
        if self.shared is not None:
            # Kept as long as it may still be served stale.
            self.shared.put(key, record, max(entry.stale_until, entry.error_until) - now)
        return self._put_l1(key, record, entry.expires_at,
                            self.negatives if entry.negative else None)

    def _put_l1(self, key: bytes, record: bytes, expires_at: float,
                storage: Storage | None = None) -> bool:
        try:
            stored = (storage or self.storage).put(key, record, expires_at)
        except Exception:  # serve what we fetched even if the disk says no
            log.exception("cache write failed")
            return False
        if not stored:
            log.debug("not stored: over the cache budget")
        return stored

    def forget_negative(self, key: bytes) -> None:
        """The image exists again: drop its remembered 404 (a read first, so the common
        case, no such record, writes nothing)."""
        if self.negative(key) is not None:
            self._delete(key, self.negatives)

    def _delete(self, key: bytes, storage: Storage) -> bool:
        try:
            return storage.delete(key)
        except Exception:
            log.exception("cache delete failed")
            return False

    def delete(self, key: bytes) -> bool:
        """Drop ``key`` from this host (images and remembered 404s) and the shared tier;
        whether this host had it."""
        if self.shared is not None:
            self.shared.delete(key)
        return self._delete(key, self.storage) | self._delete(key, self.negatives)

    def purge(self, keys: Collection[bytes]) -> int:
        """Forget these entries, here, in the shared tier and (soon) on the other hosts;
        how many this host had."""
        purged = sum(self.delete(key) for key in keys)
        if self.purges is not None:  # after Redis: no host may refill its L1 from there
            self.purges.publish(list(keys))
        return purged

    def clear(self) -> int:
        """Forget everything, here, in the shared tier and on the other hosts; how many this
        host had."""
        if self.shared is not None:
            self.shared.clear()
        purged = self.forget_all_here()
        if self.purges is not None:
            self.purges.publish_all()
        return purged

    def forget_here(self, keys: list[bytes]) -> None:
        """Another host's purge: this host's L1 only (that host cleared Redis)."""
        for key in keys:
            self._delete(key, self.storage)
            self._delete(key, self.negatives)

    def forget_all_here(self) -> int:
        return self.storage.clear() + self.negatives.clear()

    def close(self) -> None:
        """Release this host's stores (the Redis tier is closed with the locks it holds)."""
        if self.purges is not None:
            self.purges.close()
        self.storage.close()
        self.negatives.close()
