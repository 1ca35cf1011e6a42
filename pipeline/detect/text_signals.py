"""Cheap per-prompt text signals: template skeletons, chain-of-thought elicitation, exact hash.

All hashes are CRC32 (stable across processes, unlike ``hash(str)``), so checkpointed
tenant state stays valid after a restart. Everything here is plain string methods (no
regular expressions): it runs on every event.

A *skeleton* is a prompt's head (or tail), lower-cased, digits normalised: two
prompts filled into one template share the head skeleton (prefix templates) or the tail
skeleton (suffix templates) even when their content differs.

>>> skeletons("Think step by step, then answer: Tom has 3 apples.")[0] == \\
...     skeletons("Think step by step, then answer: Ann owns 17 pears.")[0]
True
>>> is_cot("Q: what is 2+2? Let's think step by step."), is_cot("What is 2+2?")
(True, False)
>>> exact_hash("a") == exact_hash("a") != exact_hash("b")
True
"""
from __future__ import annotations

import zlib

SKELETON_CHARS = 24
COT_SCAN_CHARS = 300
COT_PHRASES = (
    "step by step", "step-by-step", "explain your reasoning", "explain the reasoning",
    "explain each step", "show your work", "show all work", "show your steps",
    "show every intermediate", "show all steps", "intermediate steps", "intermediate result",
    "think carefully", "reason carefully", "think through", "reason through", "let's think",
    "lets think", "chain of thought", "chain-of-thought", "walk me through", "walk through",
    "justify your answer", "before answering", "full reasoning", "detailed reasoning",
    "explain why", "work it out", "your rationale", "explain your thinking",
)
# every phrase contains one of these: a cheap first pass before the full phrase list
_ANCHORS = ("step", "reason", "think", "show", "walk", "chain", "justif", "before",
            "intermediate", "explain", "work it", "rationale")
# digits to 0 on the UTF-8 bytes: same as on the str (multi-byte sequences hold no ASCII
# digit bytes), and bytes.translate is a C table lookup where str.translate is a dict per char
_DIGITS = bytes.maketrans(b"123456789", b"000000000")


def _norm(s: str) -> bytes:
    return s.lower().encode("utf-8", "surrogatepass").translate(_DIGITS)


def skeletons(prompt: str) -> tuple[int, int]:
    """(head, tail) skeleton hashes of a prompt; tail is 0 for short prompts."""
    head = zlib.crc32(_norm(prompt[:SKELETON_CHARS]))
    if len(prompt) <= 2 * SKELETON_CHARS:
        return head, 0
    return head, zlib.crc32(_norm(prompt[-SKELETON_CHARS:]), 0x9E3779B9) or 1


def is_cot(prompt: str) -> bool:
    """Does the prompt ask for chain-of-thought (step-by-step reasoning, shown work)?"""
    if len(prompt) > 2 * COT_SCAN_CHARS:
        prompt = prompt[:COT_SCAN_CHARS] + " " + prompt[-COT_SCAN_CHARS:]
    low = prompt.lower()
    for a in _ANCHORS:
        if a in low:
            for p in COT_PHRASES:
                if p in low:
                    return True
            return False
    return False


def exact_hash(prompt: str) -> int:
    return zlib.crc32(prompt.encode("utf-8", "surrogatepass"))
