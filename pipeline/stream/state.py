"""Which tenants' state is live in this worker, up to which source position, and saving it.

Per-tenant state (the detector's and the campaign sketcher's) is checkpointed by the app
into a Faust table (changelog-backed) after every batch; this object decides when to
restore a tenant from it and which re-delivered events to skip, so a restart never teaches
the detector the same event twice. Global models (the detector's population, the campaign
stage) are one object per worker, larger than a Kafka message, and are saved every
``every_s`` seconds to the worker's data directory and to the compacted checkpoint topic
(:mod:`pipeline.stream.checkpoint`, compressed), so a worker on a fresh data directory or
another machine restores them: a crash loses at most ``every_s`` of their learning, no
tenant state and no events. Every checkpoint carries a tag of the
detector version; one written by another version is discarded (the tenant starts fresh).
"""
from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Iterable

from pipeline.detect import DETECTOR_VERSION
from pipeline.stream import checkpoint

log = logging.getLogger(__name__)
_HEADER = struct.Struct(">qI")   # learned-up-to position, state version tag
_LEN = struct.Struct(">I")


def version_tag(*parts) -> int:
    names = "/".join(type(p).__name__ for p in parts)
    return zlib.crc32(f"{names}/{DETECTOR_VERSION}".encode())


class GlobalCheckpoint:
    """One global model, saved to a file and (``remote``) to the checkpoint topic.

    At start the newer of the file's and the topic's snapshot of this detector version is
    loaded, so a worker on a fresh data directory or another machine comes back warm. A save
    is skipped while the model's bytes are unchanged (a worker that does not own the
    summaries partition never overwrites the stage another worker is advancing)."""

    def __init__(self, obj, path: Path, tag: int, dump: str, load: str, remote=None,
                 remote_value: bytes | None = None):
        self.obj, self.path, self.tag, self.remote = obj, path, tag, remote
        self.name = path.name
        self.dump, self.load = getattr(obj, dump), getattr(obj, load)
        local = remote_snap = None
        if path.exists():
            local = _decoded(path.read_bytes(), int(path.stat().st_mtime * 1000), path)
        if remote_value is not None:
            remote_snap = _decoded(remote_value, 0, f"topic record {self.name}")
        for snap, where in ((local, path), (remote_snap, "the checkpoint topic")):
            if snap is not None and snap.tag != tag:
                log.warning("%s in %s is from another detector version; ignored",
                            self.name, where)
        best = checkpoint.newest(tag, local, remote_snap)
        self.restored_from = None
        self.saved_ms = 0   # save time of the snapshot the model now stands on
        if best is not None:
            self.load(best.payload)
            self.saved_ms = best.saved_ms
            self.restored_from = "topic" if best is remote_snap else "disk"
            log.info("restored %s from %s (saved %d ms ago, offsets %s)", type(obj).__name__,
                     self.restored_from, checkpoint.now_ms() - best.saved_ms, best.offsets)
        self._crc = zlib.crc32(self.dump())

    def save(self, offsets: dict | None = None) -> bool:
        payload = self.dump()
        crc = zlib.crc32(payload)
        if crc == self._crc:
            return False
        saved_ms = checkpoint.now_ms()
        data = checkpoint.encode(checkpoint.Snapshot(self.tag, saved_ms, payload,
                                                     offsets or {}))
        self.saved_ms = saved_ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)
        if self.remote is not None:
            try:
                self.remote.put(self.name, data)
            except Exception:  # noqa: BLE001 - the disk copy stands; the next save retries
                log.exception("could not send %s to the checkpoint topic", self.name)
                return True
        self._crc = crc
        return True

    def reload(self) -> bool:
        """Load the checkpoint topic's snapshot when it is newer than the one this model
        stands on (another process advanced it meanwhile: the campaign stage after its
        summaries partition moved here). False when not newer or not reachable."""
        if self.remote is None:
            return False
        found = _remote_latest(self.remote, [self.name]) or {}
        snap = None if self.name not in found else _decoded(
            found[self.name], 0, f"topic record {self.name}")
        if snap is None or snap.tag != self.tag or snap.saved_ms <= self.saved_ms:
            return False
        self.load(snap.payload)
        self._crc = zlib.crc32(self.dump())
        self.saved_ms = snap.saved_ms
        log.info("took over %s from the checkpoint topic (saved %d ms ago, offsets %s)",
                 type(self.obj).__name__, checkpoint.now_ms() - snap.saved_ms, snap.offsets)
        return True


def _decoded(data: bytes, mtime_ms: int, where) -> checkpoint.Snapshot | None:
    try:
        return checkpoint.decode(data, mtime_ms)
    except Exception:  # noqa: BLE001 - a damaged snapshot must not stop the worker
        log.exception("unreadable global checkpoint in %s; ignored", where)
        return None


class Checkpoints:
    """Live tenants, their positions, and eviction.

    Tenant state only grew: 200,000 one-event tenants took a worker from 0.5 to 4 GB.
    :meth:`evict` bounds it. A tenant idle for ``idle_ms`` of *event* time expires: its
    state is forgotten here and deleted from the table, so it comes back fresh. Beyond
    ``max_tenants`` live tenants, the least recently seen are forgotten here only: their
    checkpoint stays in the table, which is on disk (:mod:`pipeline.stream.tablestore`), and
    is restored when they send again, exactly as after a rebalance.
    """

    def __init__(self, tenant_parts: list, data_dir: str, global_parts: dict | None = None,
                 every_s: float = 5.0, idle_ms: int = 7 * 86_400_000,
                 max_tenants: int = 200_000, remote=None):
        """``tenant_parts``: objects with dump_tenant/load_tenant (and forget_tenant, to be
        evicted); ``global_parts``: file name -> (object, dump method name, load method
        name); ``remote``: a :class:`~pipeline.stream.checkpoint.CheckpointTopic`."""
        self.parts = tenant_parts
        self.idle_ms = idle_ms
        self.max_tenants = max_tenants
        self._seen: dict[str, int] = {}           # tenant -> latest event time, oldest first
        self.now_ms = 0                           # latest event time seen
        self.expired = self.evicted = 0
        self.every_s = every_s
        self.tag = version_tag(*tenant_parts)
        global_parts = global_parts or {}
        found = _remote_latest(remote, list(global_parts))
        self.globals = [GlobalCheckpoint(obj, Path(data_dir) / name, self.tag, dump, load,
                                         remote, (found or {}).get(name))
                        for name, (obj, dump, load) in global_parts.items()]
        self.offsets: dict[str, dict[int, int]] = {}   # input topic -> partition -> last
        self._last: dict[str, int] = {}           # tenant -> last learned position
        self._partition: dict[str, int] = {}      # tenant -> events-topic partition
        self._saved_at = time.monotonic()

    @property
    def tenants(self) -> int:
        return len(self._last)

    def known(self, tenant: str) -> bool:
        return tenant in self._last

    def encode(self, tenant: str, position: int) -> bytes | None:
        """The table value for a tenant: its position, the version tag, each part's state."""
        blobs = [p.dump_tenant(tenant) or b"" for p in self.parts]
        if not any(blobs):
            return None
        return _HEADER.pack(position, self.tag) + b"".join(_LEN.pack(len(b)) + b for b in blobs)

    def restore(self, tenant: str, stored: bytes | None, ts_ms: int | None = None) -> None:
        """Load a tenant from its table value; state of another version is dropped.

        ``ts_ms``: the event time of the event that brought the tenant back, which is when it
        was last seen until it is touched (its events may all be re-deliveries it learned
        before a restart). Without it the tenant cannot expire before it is touched."""
        position = -1
        if stored:
            position, tag = _HEADER.unpack_from(stored)
            if tag != self.tag:
                log.warning("tenant %r: checkpoint from another version, starting fresh", tenant)
            else:
                try:
                    at = _HEADER.size
                    for part in self.parts:
                        (n,) = _LEN.unpack_from(stored, at)
                        if n:
                            part.load_tenant(tenant, stored[at + 4:at + 4 + n])
                        at += 4 + n
                except Exception:  # noqa: BLE001 - a bad checkpoint must not stop the worker
                    log.exception("tenant %r: unreadable checkpoint, starting fresh", tenant)
        self._last[tenant] = position
        if ts_ms is not None:
            self._seen.setdefault(tenant, ts_ms)

    def already_learned(self, tenant: str, pos: tuple[int, int]) -> bool:
        return pos[1] <= self._last.get(tenant, -1)

    def touched(self, events: Iterable) -> list[tuple[str, tuple[int, int]]]:
        latest: dict[str, tuple[int, int]] = {}
        seen = self._seen
        for e in events:
            latest[e.tenant_id] = e.extra["pos"]
            t = seen.pop(e.tenant_id, e.ts_ms)
            seen[e.tenant_id] = max(t, e.ts_ms)   # re-inserted: least recently seen first
            if e.ts_ms > self.now_ms:
                self.now_ms = e.ts_ms
        for tenant, (partition, offset) in latest.items():
            self._last[tenant] = offset
            self._partition[tenant] = partition
        return list(latest.items())

    def forget_partitions(self, partitions: set[int]) -> None:
        """After a rebalance: tenants of lost partitions are restored from the table next time."""
        for tenant in [t for t, p in self._partition.items() if p in partitions]:
            self._forget(tenant)

    def _forget(self, tenant: str) -> None:
        self._last.pop(tenant, None)
        self._partition.pop(tenant, None)
        self._seen.pop(tenant, None)
        for part in self.parts:
            forget = getattr(part, "forget_tenant", None)
            if forget is not None:
                forget(tenant)

    def evict(self, room: int = 0) -> list[str]:
        """Forget idle tenants and those beyond the ceiling; returns the *expired* ones,
        whose table entries the caller deletes. Call it between batches, after the table
        holds every touched tenant's state. ``room``: tenants the next batch brings that
        are not live; that many more leave first, so the batch too stays under the ceiling
        (a batch of a long tail brought 21,000 new tenants over a ceiling of 5,000)."""
        expired, evicted = [], []
        cutoff = self.now_ms - self.idle_ms
        keep = max(0, self.max_tenants - room)
        for tenant, ts in self._seen.items():    # least recently seen first
            if ts < cutoff:
                expired.append(tenant)
            elif len(self._seen) - len(expired) - len(evicted) > keep:
                evicted.append(tenant)
            else:
                break
        for tenant in expired + evicted:
            self._forget(tenant)
        self.expired += len(expired)
        self.evicted += len(evicted)
        return expired

    def maybe_save_globals(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._saved_at < self.every_s:
            return
        for g in self.globals:
            g.save(self.offsets)
        self._saved_at = time.monotonic()

    def hand_over(self, name: str, flush_s: float = 5.0) -> None:
        """Save one global model now, to disk and the topic, and wait for the topic: its
        owner is giving it up (the campaign stage when the summaries partition is revoked),
        so the next owner's :meth:`take_over` finds this state."""
        for g in self.globals:
            if g.name == name:
                g.save(self.offsets)
                if g.remote is not None:
                    try:
                        g.remote.flush(timeout_s=flush_s)
                    except Exception:  # noqa: BLE001 - the next owner gets an older one
                        log.exception("could not flush %s to the checkpoint topic", name)

    def take_over(self, name: str) -> bool:
        """Load the newest snapshot of one global model from the topic if it is newer than
        this process's (:meth:`GlobalCheckpoint.reload`)."""
        return any(g.reload() for g in self.globals if g.name == name)

    def cover(self, topic: str, ranges) -> None:
        """Note a processed batch's (partition, first, last offset) ranges: the input
        offsets the next global snapshot covers."""
        parts = dict(self.offsets.get(topic, {}))
        for p, _, last in ranges:
            if last > parts.get(p, -1):
                parts[p] = last
        # replaced, never mutated: the detector thread may be reading it for a save
        self.offsets = {**self.offsets, topic: parts}


def _remote_latest(remote, names: list[str]) -> dict[str, bytes] | None:
    """The topic's newest snapshot per model; None when the topic cannot be reached (the
    worker then starts from its local snapshots, and keeps sending new ones)."""
    if remote is None or not names:
        return None
    try:
        remote.ensure()
        return remote.latest(names)
    except Exception:  # noqa: BLE001 - detection must start even without the topic
        log.exception("checkpoint topic unreachable; restoring from local disk only")
        return None
