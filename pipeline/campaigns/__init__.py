"""Coordinated campaigns: one extraction spread over many small accounts.

Two pure parts (no I/O): :class:`AccountSketcher` (per account, next to the per-tenant
detector: events + :class:`~pipeline.detect.base.Scored` in, small account summaries out)
and :class:`CampaignStage` (global: summaries in, one alert per campaign out).
:class:`CampaignRunner` chains them for in-process drivers (replay, benchmarks); the
worker puts the summaries on a 1-partition topic and runs the stage in its own agent.

>>> runner = CampaignRunner()
>>> runner.observe([], [])
[]
"""
from __future__ import annotations

from typing import Sequence

from pipeline.campaigns.sketch import AccountSketcher
from pipeline.campaigns.stage import CampaignStage
from pipeline.contracts.alerts import Alert

__all__ = ["AccountSketcher", "CampaignStage", "CampaignRunner"]


class CampaignRunner:
    """Sketcher -> drain -> stage, in one process.

    Parameters
    ----------
    sketcher, stage
        Instances to use (None: defaults sharing ``seed``).
    seed
        MinHash seed shared by the default sketcher and stage.
    """

    def __init__(self, sketcher: AccountSketcher | None = None,
                 stage: CampaignStage | None = None, seed: int = 0):
        self.seed = seed
        self.sketcher = sketcher if sketcher is not None else AccountSketcher(seed=seed)
        self.stage = stage if stage is not None else CampaignStage(seed=seed)
        if self.sketcher.seed != self.stage.seed:
            raise ValueError("sketcher and stage need the same seed")

    def observe(self, events: Sequence, scored: Sequence) -> list[Alert]:
        """Fold a processed batch in; the campaign alerts it caused."""
        self.sketcher.observe_batch(events, scored)
        return self.stage.update_many(self.sketcher.drain())
