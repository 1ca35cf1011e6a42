"""CAP-style coverage baseline (Kesarwani et al., 2018, "Model extraction warning in MLaaS").

The extraction monitor tracks how much of the model's input space a user's queries have
covered and warns past a threshold. Their partition is the victim's decision-tree regions;
an LLM has no such tree, so the embedding space is partitioned into ``cells`` regions by
cosine k-means fitted on benign calibration prompts. Statistic: the share of regions the
tenant has visited; the threshold flags ``target_fpr`` of benign calibration tenants.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pipeline.bench.baselines.common import TenantStatistic, spherical_kmeans, vectors_of
from pipeline.contracts.events import Event


@dataclass(slots=True)
class _State:
    cells: set = field(default_factory=set)
    seen: int = 0


class CoverageBaseline(TenantStatistic):
    name = "coverage"

    def __init__(self, threshold: float | None = 0.5, cells: int = 256, seed: int = 0,
                 centroids: np.ndarray | None = None):
        if cells < 2:
            raise ValueError("need at least 2 cells")
        super().__init__(threshold)
        self.cells = cells
        self.seed = seed
        self.centroids = centroids

    def fit(self, events: Sequence[Event]) -> None:
        self.centroids = spherical_kmeans(vectors_of(events, seed=self.seed), self.cells,
                                          seed=self.seed)

    def _new_state(self):
        return _State()

    def _observe(self, st: _State, event: Event) -> float | None:
        st.seen += 1
        if event.embedding is None or self.centroids is None:
            return None
        st.cells.add(int(np.argmax(self.centroids @ event.embedding)))
        return len(st.cells) / len(self.centroids)

    def _summary(self, st: _State, stat: float) -> str:
        return (f"queries reached {len(st.cells)} of {len(self.centroids)} regions of the "
                f"input space ({stat:.0%}), above the benign limit of {self.threshold:.0%}")
