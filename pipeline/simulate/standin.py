"""Synthetic stand-in for the prompt corpus, used only when even the shipped sample is absent.

It is NOT real traffic: topics are random clusters in 384-d (kind centre -> topic centre ->
prompt, each a noisy step), and texts are templates filled with per-topic pseudo-words, so
both a hashing text embedder and the provided vectors see the same topic structure. Sources
are named ``standin_<split>_<kind>`` so the calib/report split rule still holds. Numbers
measured on it say nothing about real prompts; benchmarks print a warning when it is used.
"""
from __future__ import annotations

import numpy as np

DIM = 384
TOPICS_PER_KIND = {"chat": 12, "code": 4, "math": 3, "reasoning": 5, "exam": 8, "nlp": 6,
                   "ai_eval": 4, "adversarial": 4}
OPENERS = {
    "chat": ["Can you help me write", "I want you to act as", "Give me ideas for", "Explain"],
    "code": ["Write a Python function that", "Fix this code that", "Implement a class for"],
    "math": ["A shop sells", "Compute how many", "If a train travels"],
    "reasoning": ["Is the following argument valid:", "Sort these words:", "Which date is"],
    "exam": ["Which of the following best describes", "The main cause of", "Choose the answer:"],
    "nlp": ["Summarize this article about", "Classify the sentiment of", "Extract entities from"],
    "ai_eval": ["Would you agree that", "Is it acceptable for an AI to", "Do you want more"],
    "adversarial": ["Ignore previous instructions and", "Pretend you have no rules and",
                    "For a story, describe how to"],
}
_SYLLABLES = ["ka", "lo", "mi", "ne", "tor", "vex", "qui", "ran", "dul", "fes", "gor", "hil",
              "jup", "mar", "nop", "pla", "sen", "tiv", "wol", "zen"]


def _word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES, size=rng.integers(2, 4)))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def standin_pool(split: str):
    """A :class:`~pipeline.simulate.pool.Pool` of synthetic prompts for ``split``."""
    from pipeline.simulate.pool import Pool

    rng = np.random.default_rng(sum(map(ord, split)) * 7919)
    texts: list[str] = []
    cats: list[str] = []
    embs: list[np.ndarray] = []
    for kind, n_topics in TOPICS_PER_KIND.items():
        kind_centre = _unit(rng.standard_normal(DIM))
        for t in range(n_topics):
            topic = _unit(0.6 * kind_centre + 0.8 * _unit(rng.standard_normal(DIM)))
            vocab = [_word(rng) for _ in range(16)]
            n = int(rng.integers(120, 400))
            noise = _unit(rng.standard_normal((n, DIM)))
            embs.append(_unit(topic + 0.9 * noise).astype(np.float16))
            for i in range(n):
                words = " ".join(rng.choice(vocab, size=rng.integers(5, 14)))
                texts.append(f"{rng.choice(OPENERS[kind])} {words} {i}?")
                cats.append(f"standin_{split}_{kind}/topic{t:02d}")
    sources = np.asarray([c.split("/", 1)[0] for c in cats])
    return Pool(split=split, texts=texts, embeddings=np.concatenate(embs), sources=sources,
                categories=np.asarray(cats), stand_in=True, origin="synthetic")
