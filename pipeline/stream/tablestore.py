"""Where the ``tenant-state`` table lives in the worker: on disk, in bounded memory.

With Faust's in-memory store every checkpoint ever written stays in the process until it
expires, so ``COVERWATCH_MAX_TENANTS`` bounded the live objects but not the table (6 KB per
tenant, 6 GB at a million). :class:`TenantStore` is Faust's RocksDB store (through
``rocksdict``) with two changes:

- its memory is fixed, not proportional to the tenants: per partition a 4 MiB write buffer
  (two at most) and an 8 MiB block cache (:data:`ROCKSDB_OPTIONS`; Faust's defaults are
  64 MiB x 3 and 2 GiB);
- a key is written to, read from and deleted in the database of *its* changelog partition.
  Faust's store files a write under the partition of the stream's current event: the detect
  agent writes after a batch (``take_events``), where there is none (Faust's store fails an
  assertion), and a batch mixes partitions anyway; a tenant filed under another partition's
  database would be read back stale after that partition's changelog was recovered, or lost
  with it on a rebalance (``tests/test_tenant_eviction.py`` checks where a worker files them).

The databases sit in ``<COVERWATCH_DATA_DIR>/v1/tables/tenant-state-<p>.db``
and hold the same keys as the compacted changelog: a tenant's checkpoint lives there until
it expires (``COVERWATCH_TENANT_IDLE_HOURS``, then it is deleted from both). Faust records
in each database the changelog offset it holds, so a restart on the same data directory
reads only the changelog written since; on a fresh directory it reads the whole compacted
changelog (one record per tenant not yet expired). Deleting the directory loses nothing.
"""
from __future__ import annotations

from typing import Optional

from faust.stores import STORES, rocksdb

from pipeline.stream.codec import key_partition

ALIAS = "coverwatch-rocksdb"
MiB = 1 << 20
ROCKSDB_OPTIONS = {"write_buffer_size": 4 * MiB, "max_write_buffer_number": 2,
                   "block_cache_size": 8 * MiB, "driver": "rocksdict"}


class TenantStore(rocksdb.Store):
    """Faust's RocksDB store, keyed to the changelog partitions (see the module)."""

    def _partition_db(self, key: bytes):
        return self._dbs.get(key_partition(key, self.table.partitions))

    def _set(self, key: bytes, value: Optional[bytes]) -> None:
        self._db_for_partition(key_partition(key, self.table.partitions)).put(key, value)

    def _get(self, key: bytes) -> Optional[bytes]:
        db = self._partition_db(key)
        return None if db is None else db.get(key)

    def _del(self, key: bytes) -> None:
        db = self._partition_db(key)
        if db is not None:
            db.delete(key)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None


STORES.aliases[ALIAS] = f"{__name__}:TenantStore"
