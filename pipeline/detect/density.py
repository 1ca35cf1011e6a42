"""Where the population's queries land: a count per 12-bit cell, so a tenant's reach into
regions few tenants visit can be measured.

A general-chat product relaying many people is broad, but its queries land where everyone
else's do (help with code, writing, everyday questions); a sweep over a public corpus, word
salad or encyclopedia sentences keeps landing in cells the population rarely visits. The
``rare`` feature of a window is the share of its queries in a cell holding less than
``RARE_SHARE / 4096`` of the population's queries.

Rare flags are read from a *snapshot* of the counts refreshed every :data:`SNAPSHOT` vectors
(in stream order), so any batching of the same stream gives the same flags; before
:data:`MIN_SEEN` vectors nothing is judged (-1). Counts are halved past :data:`HALF_AT`, so
the picture follows the traffic slowly.

>>> d = CellDensity()
>>> import numpy as np
>>> common = np.full(20_000, 7)
>>> int(d.flags(common, np.ones(20_000, bool))[-1]), d.flags(np.array([9, 7]), np.ones(2, bool)).tolist()
(0, [1, 0])
"""
from __future__ import annotations

import numpy as np

CELLS = 4096
RARE_SHARE = 0.5
SNAPSHOT = 4096
MIN_SEEN = 16_384
HALF_AT = 4_000_000


class CellDensity:
    """Population counts per 12-bit cell and the rare flags of new vectors."""

    def __init__(self):
        self.counts = np.zeros(CELLS, np.float64)
        self.seen = 0                      # vectors counted (before halving)
        self.total = 0.0                   # sum of counts
        self._snap: np.ndarray | None = None

    def flags(self, cells: np.ndarray, has: np.ndarray) -> np.ndarray:
        """int8 per event: 1 rare cell, 0 common, -1 not judged (no vector, or too early);
        the events' cells are counted in, in order, snapshot by snapshot."""
        out = np.full(len(cells), -1, np.int8)
        idx = np.flatnonzero(has)
        c = np.asarray(cells, np.int64)[idx] & (CELLS - 1)
        lo = 0
        while lo < len(idx):
            room = SNAPSHOT - self.seen % SNAPSHOT
            hi = min(len(idx), lo + room)
            if self._snap is not None:
                out[idx[lo:hi]] = self._snap[c[lo:hi]]
            np.add.at(self.counts, c[lo:hi], 1.0)
            self.seen += hi - lo
            self.total += hi - lo
            if self.seen % SNAPSHOT == 0:
                if self.total > HALF_AT:
                    self.counts *= 0.5
                    self.total *= 0.5
                if self.seen >= MIN_SEEN:
                    self._snap = (self.counts * CELLS < RARE_SHARE * self.total).astype(np.int8)
            lo = hi
        return out
