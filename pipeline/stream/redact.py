"""What the internal topic carries of an event: what detection needs, not the raw data.

The detector reads three things from the raw fields: the prompt's vector (from the
embedder), the prompt's text signals (:func:`~pipeline.detect.features.prompt_bits`, one
int of hashes and a chain-of-thought flag) and *which* client, key and address prefix an
event came from (equality only). So unless ``COVERWATCH_STORE_PROMPTS=text``, the ingest
stage, before repartitioning:

- embeds the prompt (the detect stage then never needs its text),
- replaces the prompt by :func:`stand_in`: a short string made of the prompt's signals
  only, for which ``prompt_bits`` gives exactly the prompt's value (CRC32 is linear, so the
  free characters are solved for, not searched), so the detector's output is unchanged
  without any change to the detector,
- replaces ``api_key_id``, ``user_agent`` and ``client_ip`` by keyed BLAKE2b pseudonyms
  (``COVERWATCH_PROMPT_SALT`` is the key; the address keeps a pseudonym of its /24 or /48
  so the campaign stage still sees shared prefixes), and drops ``metadata``.

>>> from pipeline.detect.features import prompt_bits
>>> p = "Explain step by step why the sky is blue, then list three other examples of it"
>>> s = stand_in(prompt_bits(p))
>>> prompt_bits(s) == prompt_bits(p), "sky" in s, len(s) < len(p)
(True, False, True)
"""
from __future__ import annotations

import hashlib
import zlib
from functools import lru_cache
from typing import Sequence

from pipeline.campaigns.sketch import ip_prefix
from pipeline.contracts.events import Event
from pipeline.detect.features import prompt_bits
from pipeline.detect.text_signals import SKELETON_CHARS

_FILL = 0x60          # "`": with the 16 bytes 0x60..0x6F ("`a".."o") the low 4 bits are free,
_FREE = 4             # and lower-casing, digit folding and UTF-8 leave them unchanged
_MID = 8              # free characters between head and tail, for the exact hash
_COT = b" step by step "
_TAIL_SEED = 0x9E3779B9   # text_signals.skeletons' seed for the tail hash


def _solver(length: int, free_at: range, crc_bits: int, start: int = 0):
    """A function ``target -> bytes`` of ``length`` bytes (``_FILL`` elsewhere) whose
    CRC32 (with ``start``) has ``target`` in its low ``crc_bits`` bits, by setting the low 4
    bits of the bytes at ``free_at``. CRC32 is affine in the message bits for a fixed
    length, so each target bit is the XOR of a fixed set of flips (Gaussian elimination)."""
    base = bytearray([_FILL] * length)
    mask = (1 << crc_bits) - 1
    base_crc = zlib.crc32(bytes(base), start) & mask
    rows = []   # (effect on the crc, flips as an int of length * 8 bits)
    for i in free_at:
        for j in range(_FREE):
            flipped = bytearray(base)
            flipped[i] ^= 1 << j
            rows.append(((zlib.crc32(bytes(flipped), start) & mask) ^ base_crc,
                         1 << (8 * i + j)))
    basis: dict[int, tuple[int, int]] = {}   # pivot bit -> (effect, flips)
    for eff, flips in rows:
        for bit, (e2, f2) in basis.items():
            if eff >> bit & 1:
                eff, flips = eff ^ e2, flips ^ f2
        if eff:
            bit = eff.bit_length() - 1
            for b2, (e2, f2) in list(basis.items()):
                if e2 >> bit & 1:
                    basis[b2] = (e2 ^ eff, f2 ^ flips)
            basis[bit] = (eff, flips)
    if len(basis) != crc_bits:
        raise AssertionError("free bits do not span the CRC")
    unit = {bit: flips for bit, (_, flips) in basis.items()}   # reduced: effect == 1 << bit

    def solve(target: int) -> bytes:
        want = target ^ base_crc
        flips = 0
        for bit, f in unit.items():
            if want >> bit & 1:
                flips ^= f
        out = bytearray(base)
        for i in free_at:
            out[i] ^= flips >> (8 * i) & 0xFF
        return bytes(out)
    return solve


_HEAD = _solver(SKELETON_CHARS, range(SKELETON_CHARS), 24)
_TAIL = _solver(SKELETON_CHARS, range(SKELETON_CHARS), 32, _TAIL_SEED)
_EXACT: dict = {}


def _exact_solver(head: bytes, rest: bytes):
    """Bytes ``head + mid + rest`` whose CRC32's low 13 bits are a target (``mid`` free).

    The CRC of a fixed-length message is affine in its bits, so flips inside ``mid`` act the
    same whatever the other bytes are: the solver is built once per layout, with ``_FILL``
    bytes, and the actual head and rest only move its constant."""
    key = (len(head), len(rest))
    solve = _EXACT.get(key)
    if solve is None:
        solve = _EXACT[key] = _solver(len(head) + _MID + len(rest),
                                      range(len(head), len(head) + _MID), 13)
    return solve


@lru_cache(maxsize=65_536)
def stand_in(bits: int | None) -> str | None:
    """A string ``s`` with ``prompt_bits(s) == bits``, made of nothing but ``bits``."""
    if bits is None or bits < 0:
        return None
    head = _HEAD((bits >> 13 & 0xFFF) | (bits >> 39 & 0xFFF) << 12)
    t = bits >> 25 & 0x1FFF
    cot = _COT if bits >> 38 & 1 else b""
    # a tail exists for prompts over 2 * SKELETON_CHARS: the stand-in is then long too
    tail = _TAIL(0xFF000000 | (t - 1) | (bits >> 51 & 0xFFF) << 12) if t else b""
    rest = cot + tail
    base = head + bytes([_FILL] * _MID) + rest
    fill = zlib.crc32(bytes([_FILL] * len(base)))
    solve = _exact_solver(head, rest)
    # shift the target by what head and rest change against an all-fill message
    shifted = (bits & 0x1FFF) ^ ((zlib.crc32(base) ^ fill) & 0x1FFF)
    body = bytearray(solve(shifted))
    body[:len(head)] = head
    body[len(head) + _MID:] = rest
    return body.decode("ascii")


def pseudonym(value: str | None, salt: bytes, kind: str) -> str | None:
    """Keyed hash of a field value (16 hex digits), distinct per ``kind``."""
    if not value:
        return value
    return hashlib.blake2b(f"{kind}\x1f{value}".encode("utf-8", "surrogatepass"),
                           key=salt, digest_size=8).hexdigest()


class Redactor:
    """Turns validated events into what the internal topic may carry (see module doc).

    ``vectors`` is a :class:`pipeline.process.PromptVectors` (or None: no text embedder);
    ``store_prompts`` ``"hash"`` keeps the salted prompt hash the events table stores.
    """

    def __init__(self, vectors, salt: str = "", store_prompts: str = "none"):
        self.vectors = vectors
        self.salt_text = salt
        self.salt = salt.encode()[:64]
        self.store_prompts = store_prompts
        self._texts: dict = {}   # hash(prompt) -> prompt_bits (bounded by prompt_bits)
        self._names: dict = {}   # (kind, value) -> pseudonym; the same few recur

    def _pseudonym(self, value: str | None, kind: str) -> str | None:
        if not value:
            return value
        names = self._names
        p = names.get((kind, value))
        if p is None:
            if len(names) >= 1 << 16:
                names.clear()
            if kind == "addr":
                p = (pseudonym(ip_prefix(value), self.salt, "prefix") + "."
                     + pseudonym(value, self.salt, "ip"))
            else:
                p = pseudonym(value, self.salt, kind)
            names[(kind, value)] = p
        return p

    def __call__(self, events: Sequence[Event]) -> None:
        if self.vectors is not None:
            self.vectors.embed(events)
        from pipeline.sinks.clickhouse import prompt_column
        hashed = self.store_prompts == "hash"
        name = self._pseudonym
        for e in events:
            if e.prompt:
                e.extra["prompt_column"] = (prompt_column(e.prompt, "hash", self.salt_text)
                                            if hashed else "")
                e.prompt = stand_in(prompt_bits(e.prompt, self._texts))
            e.extra.setdefault("provided_embedding", e.embedding is not None)
            e.api_key_id = name(e.api_key_id, "key")
            e.user_agent = name(e.user_agent, "ua")
            e.client_ip = name(e.client_ip, "addr")
            e.metadata = None
