"""What a detector says about a batch of events: the data the shell stores and forwards.

A contract, not detector code: the ClickHouse sink and the campaign sketcher read it, so it
lives below both (the detectors build it, :mod:`pipeline.detect.base` re-exports it).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pipeline.contracts.alerts import Alert


@dataclass(slots=True)
class Scored:
    """What the detector says about one event."""

    cell: int = 0            # coarse locality cell id of the event (0 when it had no vector)
    novel: bool = False      # first time this tenant reached that cell
    score: float = 0.0       # tenant's current anomaly score, comparable across tenants
    drift: float = 0.0       # tenant's current drift score against its own past
    alerts: list[Alert] = field(default_factory=list)
    # the tenant's window summary when this event closed a window (coverwatch), else None:
    # {"tenant_id", "ts_ms", "events_seen", "window", "features", "score", "cells_minhash"}
    summary: dict | None = None


class ScoredBatch(Sequence[Scored]):
    """What the detector says about a batch of events, kept as columns.

    A :class:`Scored` per event costs more than the rest of the per-event work, so a batch
    keeps ``cells``, ``novel``, ``scores`` and ``drifts`` as lists and holds real
    :class:`Scored` objects only for events that raised alerts or carry a window summary
    (``special``: index -> Scored). Indexing and iteration build the others on demand, so it
    behaves as the ``list[Scored]`` of the protocol; column readers skip that cost.
    ``bits``, when the detector sets it, holds each event's packed prompt signals
    (:func:`pipeline.detect.features.prompt_bits`; None or negative: no prompt), so the
    campaign sketcher does not hash every prompt a second time.

    >>> b = ScoredBatch([3, 0], [True, False], [0.5, 0.25], [0.0, 0.0])
    >>> b.special[1] = Scored(cell=0, summary={"window": 1})
    >>> len(b), b[0].cell, b[0].novel, b[1].summary, [s.score for s in b], b.alerts()
    (2, 3, True, {'window': 1}, [0.5, 0.0], [])
    """

    __slots__ = ("bits", "cells", "drifts", "novel", "scores", "special")

    def __init__(self, cells: list[int], novel: list[bool], scores: list[float],
                 drifts: list[float], special: dict[int, Scored] | None = None):
        self.cells, self.novel, self.scores, self.drifts = cells, novel, scores, drifts
        self.special: dict[int, Scored] = {} if special is None else special
        self.bits: list | None = None

    def __len__(self) -> int:
        return len(self.cells)

    def _one(self, i: int) -> Scored:
        s = self.special.get(i)
        if s is None:
            s = Scored(self.cells[i], self.novel[i], self.scores[i], self.drifts[i])
        return s

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._one(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("ScoredBatch index out of range")
        return self._one(i)

    def __iter__(self) -> Iterator[Scored]:
        special = self.special
        for i, (c, n, sc, d) in enumerate(zip(self.cells, self.novel, self.scores,
                                               self.drifts)):
            s = special.get(i)
            yield Scored(c, n, sc, d) if s is None else s

    def alerts(self) -> list[Alert]:
        """Every alert of the batch, in event order."""
        return [a for i in sorted(self.special) for a in self.special[i].alerts]


def scored_columns(scored: Sequence[Scored]) -> tuple[list, list, list, list]:
    """``(cells, novel, scores, drifts)`` of a batch: a :class:`ScoredBatch`'s own columns
    (no Scored built per event), or gathered from any sequence of Scored."""
    if isinstance(scored, ScoredBatch):
        return scored.cells, scored.novel, scored.scores, scored.drifts
    return ([s.cell for s in scored], [s.novel for s in scored], [s.score for s in scored],
            [s.drift for s in scored])


def batch_alerts(scored: Sequence[Scored]) -> list[Alert]:
    """Every alert raised in a batch (a :class:`ScoredBatch` or any sequence of Scored)."""
    if isinstance(scored, ScoredBatch):
        return scored.alerts()
    return [a for s in scored for a in s.alerts]
