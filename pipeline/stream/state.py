"""Which tenants' detector state is live in this worker, and up to which source offset.

Tenant state itself is checkpointed by the app into a Faust table (changelog-backed); this
object decides when to restore a tenant from it and which re-delivered events to skip, so a
restart never teaches the detector the same event twice. The population model is saved to
the worker's data directory periodically (it is one object per worker, ~1 MiB, larger than
a Kafka message): a crash loses at most ``every_s`` (5) seconds of population learning, no
tenant state and no events.
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

log = logging.getLogger(__name__)
_HEADER = struct.Struct(">qI")   # learned-up-to position, detector state version tag


def version_tag(detector) -> int:
    return zlib.crc32(f"{type(detector).__name__}/{DETECTOR_VERSION}".encode())


class Checkpoints:
    def __init__(self, detector, data_dir: str, every_s: float = 5.0):
        self.detector = detector
        self.path = Path(data_dir) / "population.bin"
        self.every_s = every_s
        self._last: dict[str, int] = {}           # tenant -> last learned offset
        self._partition: dict[str, int] = {}      # tenant -> events-topic partition
        self._saved_at = time.monotonic()
        self.tag = version_tag(detector)
        if self.path.exists() and hasattr(detector, "load_population"):
            data = self.path.read_bytes()
            if data[:4] == struct.pack(">I", self.tag):
                detector.load_population(data[4:])
                log.info("population model restored from %s", self.path)
            else:
                log.warning("population checkpoint %s is from another detector version; "
                            "starting a fresh population", self.path)

    @property
    def tenants(self) -> int:
        return len(self._last)

    def known(self, tenant: str) -> bool:
        return tenant in self._last

    def encode(self, tenant: str, position: int) -> bytes | None:
        """The table value for a tenant: its position, the state version, its state."""
        blob = self.detector.dump_tenant(tenant)
        return None if blob is None else _HEADER.pack(position, self.tag) + blob

    def restore(self, tenant: str, stored: bytes | None) -> None:
        """Load a tenant from its table value; state of another version is dropped."""
        position = -1
        if stored:
            position, tag = _HEADER.unpack_from(stored)
            if tag != self.tag:
                log.warning("tenant %r: checkpoint from another detector version, starting "
                            "fresh", tenant)
            else:
                try:
                    self.detector.load_tenant(tenant, stored[_HEADER.size:])
                except Exception:  # noqa: BLE001 - a bad checkpoint must not stop the worker
                    log.exception("tenant %r: unreadable checkpoint, starting fresh", tenant)
        self._last[tenant] = position

    def already_learned(self, tenant: str, pos: tuple[int, int]) -> bool:
        return pos[1] <= self._last.get(tenant, -1)

    def touched(self, events: Iterable) -> list[tuple[str, tuple[int, int]]]:
        latest: dict[str, tuple[int, int]] = {}
        for e in events:
            latest[e.tenant_id] = e.extra["pos"]
        for tenant, (partition, offset) in latest.items():
            self._last[tenant] = offset
            self._partition[tenant] = partition
        return list(latest.items())

    def forget_partitions(self, partitions: set[int]) -> None:
        """After a rebalance: tenants of lost partitions are restored from the table next time."""
        for tenant in [t for t, p in self._partition.items() if p in partitions]:
            self._last.pop(tenant, None)
            self._partition.pop(tenant, None)

    def maybe_save_population(self, force: bool = False) -> None:
        if not hasattr(self.detector, "dump_population"):
            return
        if not force and time.monotonic() - self._saved_at < self.every_s:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(struct.pack(">I", self.tag) + self.detector.dump_population())
        os.replace(tmp, self.path)
        self._saved_at = time.monotonic()
