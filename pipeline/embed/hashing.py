"""Fast, dependency-free text embedder: hashed words and character n-grams, projected to ``dim``.

Events that carry only prompt text still need a vector for the coverage and drift detectors.
A transformer (all-MiniLM-L6-v2) would cost a GPU or ~1 ms per prompt on CPU; this embedder
runs at tens of thousands of prompts per second on one core with numpy alone, and keeps as
much of MiniLM's nearest-neighbour structure as a bag of n-grams can (measured by
``coverwatch bench embed``: recall@10 of MiniLM neighbours on the shared prompt corpus).

How a text becomes a vector (everything vectorised over the whole batch):

1. Lowercase, cut to ``max_chars`` (MiniLM reads only its first 128 tokens, ~500 chars).
2. Split into words (runs of Unicode letters/digits). A small built-in English stopword list
   is dropped: function words say little about topic and would otherwise dominate.
3. Features: content-word unigrams and character 2-4-grams inside each content word (they
   match inflections and compounds, and work for text without spaces, e.g. Chinese; n-grams
   across word boundaries and word bigrams measured worse). Each group is L2-normalised on
   its own and mixed with fixed weights, so a text's many n-grams do not drown its words.
4. Feature hashing with a seeded 64-bit hash (never Python's ``hash()``): each feature adds
   ``±weight`` to ``nnz`` of the ``dim`` coordinates, i.e. a fixed sparse random projection
   of the huge n-gram space. The result is square-rooted (signed), which damps features that
   repeat, then L2-normalised.

Same text, same ``seed`` and parameters give the same vector in every process.

>>> emb = HashingEmbedder(dim=384, seed=0)
>>> v = emb.embed(["How do I reverse a list in Python?",
...                "Reverse a Python list: how?",
...                "Recipe for a vegan chocolate cake"])
>>> v.shape, v.dtype
((3, 384), dtype('float32'))
>>> bool(abs(float(v[0] @ v[0]) - 1.0) < 1e-5)
True
>>> bool(v[0] @ v[1] > v[0] @ v[2])
True
>>> bool((emb.embed_one("How do I reverse a list in Python?") == v[0]).all())
True
"""
from __future__ import annotations

import numpy as np

__all__ = ["HashingEmbedder", "STOPWORDS"]

# A small English function-word list (written by hand, not derived from any corpus).
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
s t d ll m re ve y also may might must shall us let get got
""".split())

_U64 = np.uint64
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_GOLD = _U64(0x9E3779B97F4A7C15)
_MAXCP = 0x10000


def _build_word_table() -> np.ndarray:
    # True for code points that belong to words (Unicode letters, digits, marks); anything at
    # or beyond the BMP (emoji, rare scripts) is treated as a word character.
    table = np.fromiter((chr(i).isalnum() for i in range(_MAXCP)), bool, _MAXCP)
    table[0xD800:0xE000] = False
    table[_MAXCP - 1] = True
    return table


_WORD_CHAR = _build_word_table()


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised, in place on a uint64 array (returns it)."""
    x ^= x >> _U64(30)
    x *= _M1
    x ^= x >> _U64(27)
    x *= _M2
    x ^= x >> _U64(31)
    return x


def _seeded_constants(seed: int, k: int) -> np.ndarray:
    x = (np.arange(1, k + 1, dtype=_U64) * _GOLD) ^ _U64(seed & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        return _mix(_mix(x)) | _U64(1)  # odd: multiplication by it is a bijection mod 2**64


class HashingEmbedder:
    """Embed prompt texts into ``dim``-dimensional unit vectors without a model.

    Parameters
    ----------
    dim : output dimension (match the deployment's embedding dimension).
    seed : hashing seed; vectors from different seeds are not comparable.
    max_chars : characters read per text (speed; MiniLM also truncates).
    char_ngrams : (min, max) character n-gram lengths over content words; ``None`` to disable.
    word_ngrams : 1 for unigrams only, 2 to add bigrams of consecutive content words.
    weights : mixing weights of the (word, bigram, char) groups (bigram one used if enabled).
    nnz : coordinates each feature touches (sparse random projection density).
    power : exponent of the signed power normalisation (1.0 disables it).
    stopwords : words to drop (lowercase); defaults to :data:`STOPWORDS`.
    span_words : let character n-grams run across word boundaries.
    """

    def __init__(
        self,
        dim: int = 384,
        seed: int = 0,
        max_chars: int = 512,
        char_ngrams: tuple[int, int] | None = (2, 4),
        word_ngrams: int = 1,
        weights: tuple[float, float, float] = (1.0, 0.5, 1.0),
        nnz: int = 1,
        power: float = 0.5,
        stopwords: frozenset[str] | None = None,
        span_words: bool = False,
    ):
        if dim < 1 or max_chars < 1 or nnz < 1 or word_ngrams not in (1, 2):
            raise ValueError("need dim >= 1, max_chars >= 1, nnz >= 1, word_ngrams in (1, 2)")
        if char_ngrams is not None and not 1 <= char_ngrams[0] <= char_ngrams[1]:
            raise ValueError("char_ngrams must be (min, max) with 1 <= min <= max")
        self.dim = dim
        self.seed = seed
        self.max_chars = max_chars
        self.char_ngrams = char_ngrams
        self.word_ngrams = word_ngrams
        self.weights = weights
        self.nnz = nnz
        self.power = power
        self.stopwords = stopwords
        self.span_words = span_words
        self._chunk = 256

        nmax = char_ngrams[1] if char_ngrams else 1
        k = _seeded_constants(seed, 8 + nmax)
        self._salt = k[:8]            # per feature group / projection round
        self._kchar = k[8:]           # per position inside a character n-gram
        self._pow = np.empty(max_chars + 1, _U64)  # polynomial powers for word hashes
        with np.errstate(over="ignore"):
            self._pow[0] = 1
            np.cumprod(np.full(max_chars, k[1], _U64), out=self._pow[1:])
        words = STOPWORDS if stopwords is None else stopwords
        self._stop_bits = 20
        self._stop = np.zeros(1 << self._stop_bits, bool)
        if words:
            h = self._word_hashes(*self._words(self._codepoints(sorted(words))[0]))
            self._stop[(h >> _U64(64 - self._stop_bits)).astype(np.int64)] = True

    # -- public API -------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed a batch: float32 array [len(texts), dim], each row of unit norm.

        A text with no word characters (e.g. empty) gets a fixed unit vector, so downstream
        cosine maths never sees zeros.
        """
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        out = np.empty((n, self.dim), np.float32)
        with np.errstate(over="ignore"):
            # chunks keep the per-batch count arrays cache-resident (2x faster than 2k rows)
            for i in range(0, n, self._chunk):
                part = texts[i:i + self._chunk]
                out[i:i + len(part)] = self._embed(part, len(part))
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text: float32 array [dim] (same values as in a batch)."""
        return self.embed([text])[0]

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim}, seed={self.seed}, max_chars={self.max_chars})"

    # -- internals ----------------------------------------------------------------------------

    def _codepoints(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        m = self.max_chars
        parts = [t[:m].lower() for t in texts]
        lens = np.fromiter(map(len, parts), np.int64, len(parts))
        cp = np.frombuffer("\n".join(parts).encode("utf-32-le", "surrogatepass"), np.uint32)
        ends = np.cumsum(lens + 1) - 1  # position of the separator after each text
        return cp, ends

    def _words(self, cp: np.ndarray):
        """Word-character stream: (chars, word start offsets, char position in its word)."""
        isw = _WORD_CHAR[np.minimum(cp, _MAXCP - 1)]
        pos = np.flatnonzero(isw)
        chars = cp[pos]
        brk = np.empty(len(pos), bool)  # a word starts where the previous char is not adjacent
        if len(pos):
            brk[0] = True
            np.not_equal(pos[1:], pos[:-1] + 1, out=brk[1:])
        starts = np.flatnonzero(brk)
        wid = np.cumsum(brk) - 1
        inword = np.arange(len(pos)) - starts[wid]
        return chars, starts, inword, wid, pos

    def _word_hashes(self, chars, starts, inword, wid, pos) -> np.ndarray:
        if len(starts) == 0:
            return np.zeros(0, _U64)
        with np.errstate(over="ignore"):
            x = chars.astype(_U64) * self._pow[np.minimum(inword, self.max_chars)]
            h = np.add.reduceat(x, starts)
            return _mix(h ^ self._salt[0])

    def _slots(self, h, group):
        """Accumulator slot of each feature within its (doc, group) block of ``2 * dim``.

        ``h`` is mixed with a per-group salt and multiply-shift maps its top 32 bits to
        ``[0, 2 * dim)``: the first half counts +1, the second half -1. Counting slots with an
        unweighted bincount is much faster than a weighted scatter-add of ±1.
        """
        slots = _U64(2 * self.dim)
        for r in range(self.nnz):
            g = _mix(h ^ self._salt[2 + (group * 2 + r) % 6])
            yield ((g >> _U64(32)) * slots) >> _U64(32)

    def _embed(self, texts: list[str], n: int) -> np.ndarray:
        dim = self.dim
        block = _U64(2 * dim)
        active = [g for g, w in enumerate(self.weights) if w and (
            g == 0 or (g == 1 and self.word_ngrams == 2) or (g == 2 and self.char_ngrams))]
        ngroups = _U64(max(len(active), 1))
        idx = []

        def add(base, h, group):
            base = base + _U64(active.index(group)) * block
            for s in self._slots(h, group):
                idx.append((base + s).view(np.int64))

        cp, ends = self._codepoints(texts)
        chars, starts, inword, wid, pos = self._words(cp)
        wh = self._word_hashes(chars, starts, inword, wid, pos)
        wdoc = np.searchsorted(ends, pos[starts]).astype(_U64) * (ngroups * block)
        content = ~self._stop[(wh >> _U64(64 - self._stop_bits)).astype(np.int64)]
        ch, cdoc = wh[content], wdoc[content]
        if 0 in active:
            add(cdoc, ch, 0)

        if 1 in active:
            same = np.flatnonzero(cdoc[1:] == cdoc[:-1])
            add(cdoc[1:][same], _mix(ch[:-1][same] * self._kchar[0] + ch[1:][same]), 1)

        if 2 in active:
            lo, hi = self.char_ngrams
            wlen = np.diff(np.append(starts, len(chars)))
            keep = (content & (wlen >= lo))[wid]
            c = chars[keep].astype(_U64)
            iw = inword[keep]
            c[iw == 0] += _U64(0x110000)  # mark word starts: n-grams see word boundaries
            wk = wid[keep]
            rem = wlen[wk] - iw           # chars left in the word from here
            cd = wdoc[wk]
            h = np.zeros(len(c), _U64)
            for j in range(hi):
                m = len(c) - j
                if m <= 0:
                    break
                h[:m] += c[j:] * self._kchar[j]
                if j + 1 >= lo:
                    if self.span_words:
                        same = wdoc[wk[j:]] == cd[:m]
                        ok = np.flatnonzero(same)
                    else:
                        ok = np.flatnonzero(rem[:m] > j)
                    add(cd[ok], h[ok] + _U64(j + 1) * _GOLD, 2)

        g = int(ngroups)
        counts = np.bincount(np.concatenate(idx) if idx else np.zeros(0, np.int64),
                             minlength=n * g * 2 * dim).reshape(n, g, 2, dim)
        acc = (counts[:, :, 0] - counts[:, :, 1]).astype(np.float32)
        if self.power == 0.5:
            acc = np.copysign(np.sqrt(np.abs(acc)), acc)
        elif self.power != 1.0:
            acc = np.copysign(np.abs(acc) ** np.float32(self.power), acc)
        nrm = np.sqrt(np.einsum("ijk,ijk->ij", acc, acc))
        nrm[nrm == 0] = 1.0
        wts = np.asarray([self.weights[a] for a in active] or [0.0], np.float32)
        out = np.einsum("ijk,ij->ik", acc, wts / nrm)
        nrm = np.sqrt(np.einsum("ij,ij->i", out, out))
        empty = nrm == 0
        if empty.any():
            out[empty] = self._empty_vector()
            nrm[empty] = 1.0
        return (out / nrm[:, None]).astype(np.float32)

    def _empty_vector(self) -> np.ndarray:
        v = np.zeros(self.dim)
        v[int(self._salt[7] % _U64(self.dim))] = 1.0
        return v
