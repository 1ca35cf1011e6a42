"""The one path every driver takes for a batch of validated events: de-duplicate, embed, detect.

The Faust worker, ``coverwatch replay`` and the benchmarks all call :meth:`Processor.process`,
so what the benchmark measures is what runs in production.
"""
from __future__ import annotations

import logging
from itertools import islice
from typing import Sequence

import numpy as np

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event
from pipeline.detect.base import Detector, Scored, batch_alerts

log = logging.getLogger(__name__)


DETECTORS = ("coverwatch", "burst")   # what make_detector builds (the check suite runs each)


def make_detector(name: str = "coverwatch", prior: str = "text",
                  threshold: float = 1.0) -> Detector:
    """The detector by name; ``prior``: the coverwatch population prior's embedding space
    (``text``, ``provided`` or ``none``, see :mod:`pipeline.detect.prior`); ``threshold``:
    the coverwatch window score at which an alert opens (critical stays at 2 or above it)."""
    if name == "burst":
        from pipeline.detect.burst import BurstDetector
        return BurstDetector()
    if name == "coverwatch":
        from pipeline.detect.coverwatch import CoverwatchDetector
        return CoverwatchDetector(prior=None if prior == "none" else prior,
                                  threshold=threshold, critical=max(2.0, threshold))
    raise SystemExit(f"unknown detector {name!r} (one of {', '.join(DETECTORS)})")


def make_embedder(name: str, dim: int):
    """The text embedder for events that carry a prompt but no embedding (None: don't embed)."""
    if name == "none":
        return None
    from pipeline.embed import get_embedder
    return get_embedder(name, dim=dim)


def make_campaigns(enabled: bool = True, seed: int = 0, max_accounts: int = 1_000_000):
    """The campaign sketcher and stage (issue: coordinated campaigns), or (None, None)."""
    if not enabled:
        return None, None
    from pipeline.campaigns import AccountSketcher, CampaignStage
    return AccountSketcher(seed=seed, max_accounts=max_accounts), CampaignStage(seed=seed)


def _trim(d: dict, limit: int) -> None:
    """Forget the oldest entries beyond ``limit`` (a dict keeps insertion order)."""
    excess = len(d) - limit
    if excess > 0:
        for k in list(islice(d, excess)):
            del d[k]


class PromptVectors:
    """The text embedder for events without a vector, with a cache of recent prompts'
    vectors. The worker runs it at ingest (the internal topic then needs no prompt text),
    replay and the benchmarks inside :class:`Processor`.

    An event that arrives with its ``extra["provided_embedding"]`` already set (the ingest
    stage embedded it) keeps that flag."""

    def __init__(self, embedder=None, vector_cache: int = 65_536):
        self.embedder = embedder
        self.vector_cache = vector_cache       # recent prompts whose vectors are kept
        self.cache: dict[int, np.ndarray] = {}

    def embed(self, events: Sequence[Event]) -> None:
        """Fill missing embeddings: each distinct prompt of the batch is embedded once, and
        vectors of the ``vector_cache`` most recently seen prompts are reused: re-sent
        prompts are common (on a week of simulated traffic, 86k distinct prompts in 1.1M
        events: an 8k cache re-embedded 541k, a 64k cache 96k), and the hashing embedder
        gives a text the same vector in any batch (bit for bit), so this changes no result.
        The cache is keyed by the prompts' ``hash()`` (it holds vectors, not prompts of up
        to 1 MB each), and its rows are copies, so one kept vector never pins its batch's
        whole matrix."""
        todo, keys = [], []
        for e in events:
            if e.embedding is None:
                e.extra["provided_embedding"] = False
                if e.prompt:
                    todo.append(e)
                    keys.append(hash(e.prompt))
            else:
                e.extra.setdefault("provided_embedding", True)
        if self.embedder is None or not todo:
            return
        cache = self.cache
        got = dict.fromkeys(keys)
        texts = {}
        for e, k in zip(todo, keys):
            if got[k] is None and k not in texts:
                v = got[k] = cache.pop(k, None)   # popped, re-added below: most recent last
                if v is None:
                    texts[k] = e.prompt
        if texts:
            rows = [v.copy() for v in np.asarray(self.embedder.embed(list(texts.values())))]
            for v in rows:
                v.flags.writeable = False   # shared by events and the cache
            got.update(zip(texts, rows))
        cache.update(got)
        _trim(cache, self.vector_cache)
        for e, k in zip(todo, keys):
            e.embedding = got[k]


class Processor:
    """De-duplicates by event_id (bounded), fills missing embeddings in one batch, runs the
    per-tenant detector and, when given, the campaign sketcher (per account) and stage (global).

    In one process (replay, benchmarks) the stage runs here too; the worker passes
    ``stage=None`` and forwards :meth:`drain_summaries` to its global campaign agent.
    """

    def __init__(self, detector: Detector, embedder=None, dedup_window: int = 200_000,
                 sketcher=None, stage=None, vector_cache: int = 65_536):
        self.detector = detector
        self.embedder = embedder
        self.sketcher = sketcher
        self.stage = stage
        self.dedup_window = dedup_window
        self.vectors = PromptVectors(embedder, vector_cache)
        self._vectors = self.vectors.cache
        self._recent: dict[str, None] = {}
        self.duplicates = 0

    def _fresh(self, events: Sequence[Event]) -> list[Event]:
        recent = self._recent
        keys = [e.tenant_id + "\x1f" + e.event_id for e in events]
        batch = dict.fromkeys(keys)
        if len(batch) == len(keys) and recent.keys().isdisjoint(batch):
            recent.update(batch)   # the usual case: all new, checked and added in C
            out = list(events)
        else:
            out = []
            for e, key in zip(events, keys):
                if key in recent:
                    self.duplicates += 1
                    continue
                recent[key] = None
                out.append(e)
        _trim(recent, self.dedup_window)
        return out

    def embed(self, events: Sequence[Event]) -> None:
        """Fill missing embeddings (:meth:`PromptVectors.embed`)."""
        self.vectors.embed(events)

    def process(self, events: Sequence[Event]) -> tuple[list[Event], list[Scored], list[Alert]]:
        """Returns the events kept (duplicates dropped), their scores, and the alerts raised."""
        fresh = self._fresh(events)
        self.embed(fresh)
        scored = self.detector.update_many(fresh)
        alerts = batch_alerts(scored)
        if self.sketcher is not None:
            self.sketcher.observe_batch(fresh, scored)
            if self.stage is not None:
                alerts += self.stage.update_many(self.sketcher.drain())
        return fresh, scored, alerts

    def drain_summaries(self) -> list[dict]:
        """Account summaries for a campaign stage running elsewhere (the worker's agent)."""
        return self.sketcher.drain() if self.sketcher is not None else []

    def process_safely(self, events: Sequence[Event]):
        """:meth:`process`, but an event the detector fails on is set aside, not fatal.

        Returns ``(kept, scored, alerts, failed)`` with ``failed`` a list of
        ``(event, reason)`` for the dead-letter topic; the rest are processed one by one.
        """
        try:
            return (*self.process(events), [])
        except Exception:  # noqa: BLE001 - one poisoned event must not stop the stream
            log.exception("detector failed on a batch; retrying its events one by one")
            for e in events:  # the failed attempt marked them seen
                self._recent.pop(e.tenant_id + "\x1f" + e.event_id, None)
        kept, scored, alerts, failed = [], [], [], []
        for e in events:
            try:
                k, s, a = self.process([e])
            except Exception as exc:  # noqa: BLE001
                failed.append((e, f"detector: {exc!r}"[:300]))
                continue
            kept += k
            scored += s
            alerts += a
        return kept, scored, alerts, failed
