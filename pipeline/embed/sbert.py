"""Optional exact embedder: a sentence-transformers model (default all-MiniLM-L6-v2).

Use it when the deployment's gateway embeds with MiniLM and text-only events must land in
the same space. It needs the ``sbert`` extra (``pip install 'coverwatch[sbert]'``, which
pulls PyTorch) and the model weights; nothing here is imported unless this embedder is
asked for, so the default install never touches either.
"""
from __future__ import annotations

import numpy as np

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class SentenceTransformerEmbedder:
    """Same small API as :class:`~pipeline.embed.hashing.HashingEmbedder`.

    ``dim`` must equal the model's output dimension (384 for MiniLM): a mismatch would
    silently mix incomparable vectors, so it is an error.
    """

    def __init__(self, dim: int = 384, model: str = DEFAULT_MODEL, device: str = "cpu",
                 batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the 'sbert' embedder needs sentence-transformers: "
                "pip install 'coverwatch[sbert]' (or use the default 'hashing' embedder)"
            ) from exc
        self.dim = dim
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self._model = SentenceTransformer(model, device=device)
        got = self._model.get_sentence_embedding_dimension()
        if got != dim:
            raise ValueError(f"model {model!r} outputs {got} dimensions, not dim={dim}")

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        v = self._model.encode(list(texts), batch_size=self.batch_size,
                               normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(v, np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
