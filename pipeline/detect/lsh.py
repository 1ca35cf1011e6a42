"""Sign-random-projection hashing: one 64-bit code per vector, cells at several resolutions.

A vector's code has one bit per random hyperplane (the sign of its projection). The low
``b`` bits of the code are the vector's cell at resolution ``b`` (2**b cells), so the
8-, 12- and 14-bit cells are prefixes of one code, and the Hamming distance between two
64-bit codes estimates the angle between the vectors (SimHash). Hyperplanes are drawn
lazily per vector dimension from ``(seed, dim)``, so the same seed gives the same cells in
every process whatever order dimensions appear in. Sign projections ignore the vector's
norm: normalised and raw embeddings land in the same cells.

>>> import numpy as np
>>> proj = SignProjector(seed=7)
>>> x = np.array([[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]], np.float32)
>>> codes = proj.codes(x)
>>> int(codes[0]) == int(codes[1]), hamming(int(codes[0]), int(codes[2]))
(True, 64)
>>> proj.codes(np.zeros((0, 4), np.float32)).shape
(0,)
"""
from __future__ import annotations

import numpy as np

N_BITS = 64


class SignProjector:
    """Seeded hyperplanes per dimension; ``codes(X) -> uint64[n]``."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._planes: dict[int, np.ndarray] = {}

    def planes(self, dim: int) -> np.ndarray:
        p = self._planes.get(dim)
        if p is None:
            rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, dim])
            p = self._planes[dim] = rng.standard_normal((dim, N_BITS)).astype(np.float32)
        return p

    def codes(self, x: np.ndarray) -> np.ndarray:
        """64-bit sign codes of the rows of ``x`` (one matrix multiply)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if len(x) == 0:
            return np.zeros(0, dtype=np.uint64)
        bits = (x @ self.planes(x.shape[1])) > 0
        # bit j of the code is hyperplane j: pack 64 sign bits little-endian into one uint64
        return np.packbits(bits, axis=1, bitorder="little").view("<u8").ravel()

    def code(self, v: np.ndarray) -> int:
        return int(self.codes(v)[0])

    def codes_of(self, vectors: list) -> tuple[np.ndarray, np.ndarray]:
        """Codes of a batch of vectors, one matrix multiply per vector dimension present:
        ``(uint64 codes, bool has)``, code 0 and has False for a None or empty vector.

        >>> c, has = SignProjector(7).codes_of([None, np.ones(3), np.ones(2), np.zeros(0)])
        >>> has.tolist(), int(c[0]), int(c[3])
        ([False, True, True, False], 0, 0)
        """
        ids = list(map(id, vectors))
        first = dict.fromkeys(ids)
        if len(first) < len(ids):   # shared vector objects (a re-sent prompt is embedded once)
            for j, i in enumerate(first):
                first[i] = j
            uniq = list({id(v): v for v in vectors}.values())
            codes, has = self.codes_of(uniq)
            at = np.fromiter(map(first.__getitem__, ids), np.int64, len(ids))
            return codes[at], has[at]
        dims = np.array([0 if v is None else len(v) for v in vectors], np.int64)
        codes = np.zeros(len(dims), np.uint64)
        if len(dims) and dims.min() == dims.max() > 0:
            return self.codes(np.array(vectors, dtype=np.float32)), dims > 0
        for d in np.unique(dims[dims > 0]).tolist():
            idx = np.flatnonzero(dims == d)
            codes[idx] = self.codes(np.array([vectors[i] for i in idx], dtype=np.float32))
        return codes, dims > 0


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two codes."""
    return (a ^ b).bit_count()
