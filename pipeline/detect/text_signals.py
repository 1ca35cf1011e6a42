"""Cheap per-prompt text signals: template skeletons, chain-of-thought elicitation, exact hash.

All hashes are CRC32 (stable across processes, unlike ``hash(str)``), so checkpointed
tenant state stays valid after a restart.

A *skeleton* is a prompt's head (or tail) with the parts that change between fills of one
template blanked out: digits, quoted spans and long words. Two prompts from one template
share a skeleton even when their content differs.

>>> skeletons("Solve step by step: Tom has 3 apples and buys 12 more.") == \\
...     skeletons("Solve step by step: Tom has 7 apples and buys 45 more.")
True
>>> is_cot("Q: what is 2+2? Let's think step by step."), is_cot("What is 2+2?")
(True, False)
>>> exact_hash("a") == exact_hash("a") != exact_hash("b")
True
"""
from __future__ import annotations

import re
import zlib

HEAD_CHARS = 60
TAIL_CHARS = 60
COT_SCAN_CHARS = 300

_COT = re.compile(
    r"step[- ]by[- ]step|explain (?:your|the|each|all) (?:reasoning|steps?|thinking)"
    r"|show (?:your|all|the) (?:work|steps|reasoning|working)|think (?:carefully|through|about it)"
    r"|let'?s think|reason(?:ing)? (?:through|carefully|step)|chain[- ]of[- ]thought"
    r"|walk me through|justify your answer|before (?:answering|giving)"
    r"|(?:detailed|full|complete) (?:reasoning|explanation|derivation|solution)"
    r"|explain why|rationale|work it out|intermediate steps")
_QUOTED = re.compile(r"\"[^\"]{0,80}\"|'[^']{2,80}'|`[^`]{0,80}`")
_DIGITS = re.compile(r"\d+")
_LONGWORD = re.compile(r"[^\W\d_]{8,}")
_SPACE = re.compile(r"\s+")


def _normalise(s: str) -> str:
    s = _QUOTED.sub("Q", s.lower())
    s = _DIGITS.sub("0", s)
    s = _LONGWORD.sub("W", s)
    return _SPACE.sub(" ", s)


def skeletons(prompt: str) -> tuple[int, int]:
    """(head, tail) skeleton hashes of a prompt; tail is 0 for short prompts."""
    head = _normalise(prompt[:HEAD_CHARS]).encode()
    if len(prompt) <= HEAD_CHARS:
        return zlib.crc32(head), 0
    return zlib.crc32(head), zlib.crc32(_normalise(prompt[-TAIL_CHARS:]).encode(), 0x9E3779B9)


def is_cot(prompt: str) -> bool:
    """Does the prompt ask for chain-of-thought (step-by-step reasoning, shown work)?"""
    if len(prompt) > 2 * COT_SCAN_CHARS:
        prompt = prompt[:COT_SCAN_CHARS] + " " + prompt[-COT_SCAN_CHARS:]
    return _COT.search(prompt.lower()) is not None


def exact_hash(prompt: str) -> int:
    return zlib.crc32(prompt.encode("utf-8", "surrogatepass"))
