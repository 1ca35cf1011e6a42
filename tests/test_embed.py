"""The default text embedder: deterministic, unit-norm, sane neighbours, close to MiniLM."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.embed import HashingEmbedder, get_embedder
from pipeline.simulate.corpus import REPO_ROOT, corpus_available

TEXTS = [
    "How do I reverse a list in Python?",
    "What is the capital of France?",
    "Write a poem about the sea at night.",
    "",
    "请帮我写一首关于秋天的诗。",
    "Ünïcödé naïve café — emojis 🚀🚀 and\ttabs\nnewlines",
    "x" * 10_000,
    "!!! ??? ...",
]


def test_shape_dtype_and_unit_norm():
    v = HashingEmbedder(dim=384).embed(TEXTS)
    assert v.shape == (len(TEXTS), 384)
    assert v.dtype == np.float32
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("dim", [1, 16, 100, 768])
def test_dimension_is_a_parameter(dim):
    v = get_embedder("hashing", dim=dim).embed(TEXTS)
    assert v.shape == (len(TEXTS), dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_deterministic_across_instances_and_batches():
    a = HashingEmbedder(seed=7).embed(TEXTS)
    b = HashingEmbedder(seed=7).embed(list(reversed(TEXTS)))[::-1]
    np.testing.assert_array_equal(a, b)
    one = np.stack([HashingEmbedder(seed=7).embed_one(t) for t in TEXTS])
    np.testing.assert_allclose(a, one, atol=1e-6)
    c = HashingEmbedder(seed=8).embed(TEXTS[:3])
    assert not np.allclose(a[:3], c)  # the seed matters


def test_deterministic_across_processes():
    code = ("import sys; from pipeline.embed import HashingEmbedder; v = HashingEmbedder()"
            ".embed_one('model extraction attack'); sys.stdout.write(v.tobytes().hex())")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=REPO_ROOT, env={"PYTHONHASHSEED": s}).stdout
            for s in ("1", "2")}
    assert len(runs) == 1
    here = HashingEmbedder().embed_one("model extraction attack").tobytes().hex()
    assert runs == {here}


def test_empty_and_unicode_handled():
    e = HashingEmbedder()
    empty, punct, zh, zh2, zh3 = e.embed(
        ["", "!!! ...", "请帮我写一首关于秋天的诗。", "写一首关于秋天的诗", "我想让你充当英语翻译员"])
    assert np.linalg.norm(empty) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(empty, punct)  # no words: the same fixed vector
    # Chinese has no spaces: only character n-grams can relate these
    assert zh @ zh2 > 0.25
    assert zh @ zh2 > zh @ zh3 + 0.2
    assert e.embed([]).shape == (0, 384)
    # a lone surrogate (possible from lenient JSON decoders) must not crash
    assert np.isfinite(e.embed_one("bad \ud800 text")).all()


def test_similar_texts_closer_than_unrelated():
    e = HashingEmbedder()
    q, near, far = e.embed([
        "Explain how to train a neural network with gradient descent.",
        "How do you train neural networks using gradient descent? Explain.",
        "Give me a recipe for banana bread with walnuts.",
    ])
    assert q @ near > 0.5
    assert q @ near > q @ far + 0.3
    # inflections share character n-grams
    a, b, c = e.embed(["running shoes", "shoe for runners", "tax deductions"])
    assert a @ b > a @ c


def test_case_and_stopwords_do_not_matter_much():
    e = HashingEmbedder()
    a, b = e.embed(["The Capital Of France", "capital france"])
    assert a @ b > 0.99


def test_unknown_embedder_and_missing_sbert():
    with pytest.raises(ValueError):
        get_embedder("nope")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="sentence-transformers"):
            get_embedder("sbert")


def test_bad_arguments_rejected():
    with pytest.raises(ValueError):
        HashingEmbedder(dim=0)
    with pytest.raises(ValueError):
        HashingEmbedder(char_ngrams=(4, 3))


@pytest.mark.corpus
@pytest.mark.skipif(not corpus_available(), reason="prompt corpus absent")
def test_recall_vs_minilm_well_above_bag_of_words():
    from pipeline.bench.embedding import BagOfWordsEmbedder, recall_at_k, topk_neighbours
    from pipeline.simulate.corpus import load_corpus

    corpus = load_corpus()
    queries = np.random.default_rng(1).choice(len(corpus), 300, replace=False)
    ref = topk_neighbours(corpus.embeddings.astype(np.float32), queries)
    ours = recall_at_k(ref, topk_neighbours(HashingEmbedder().embed(corpus.texts), queries))
    base = recall_at_k(ref, topk_neighbours(BagOfWordsEmbedder().embed(corpus.texts), queries))
    assert ours > base + 0.04, (ours, base)
    assert ours > 0.22, ours
