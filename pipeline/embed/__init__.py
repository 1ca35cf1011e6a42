"""Text embedders for events that carry a prompt but no precomputed ``embedding``.

``hashing`` (default) needs only numpy and is fast enough for the stream; ``sbert`` uses
sentence-transformers (extra ``coverwatch[sbert]``) when vectors must match the gateway's
MiniLM ones exactly.

>>> emb = get_embedder("hashing", dim=64)
>>> emb.embed(["hello world"]).shape
(1, 64)
"""
from __future__ import annotations

from pipeline.embed.hashing import HashingEmbedder

__all__ = ["EMBEDDERS", "HashingEmbedder", "get_embedder"]

EMBEDDERS = ("hashing", "sbert")


def get_embedder(name: str = "hashing", dim: int = 384, **kwargs):
    """Build an embedder by name; ``kwargs`` go to its constructor."""
    if name == "hashing":
        return HashingEmbedder(dim=dim, **kwargs)
    if name == "sbert":
        from pipeline.embed.sbert import SentenceTransformerEmbedder  # optional dependency

        return SentenceTransformerEmbedder(dim=dim, **kwargs)
    raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
