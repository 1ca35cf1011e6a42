"""Privacy by default: the internal topic carries no raw prompt, address, user agent or key id,
and the detector still reads the same signals from what it does carry."""
from __future__ import annotations

import random
import signal

import orjson
import pytest

from pipeline.contracts.events import Event
from pipeline.detect.features import client_hash, prompt_bits
from pipeline.process import PromptVectors, make_embedder
from pipeline.stream.codec import decode_batch, encode_batch
from pipeline.stream.redact import Redactor, stand_in
from tests.conftest import make_worker


def prompts(n_per_length: int = 20) -> list[str]:
    rng = random.Random(7)
    alphabet = "abcdefghijXYZ0123456789 ,.?!-'\"İÇğé漢字🙂\n\t"
    out = ["Explain step by step why the sky is blue", "a" * 700 + " let's think " + "b" * 700,
           "Show your work " * 40, "x", "Think it through: " + "q" * 31]
    for n in list(range(1, 70)) + [200, 599, 600, 601, 5000]:
        out += ["".join(rng.choice(alphabet) for _ in range(n)) for _ in range(n_per_length)]
    return out


def test_the_stand_in_gives_every_prompt_its_own_text_signals():
    for p in prompts():
        b = prompt_bits(p)
        s = stand_in(b)
        assert prompt_bits(s) == b, p
        assert len(s) <= 80


def test_redaction_keeps_vectors_signals_and_client_identity():
    emb = make_embedder("hashing", 64)
    raw = [Event(f"e{i}", 1767225600000 + i, "t", api_key_id=f"key-{i % 3}",
                 prompt=f"Prompt number {i % 5}, a question", client_ip=f"10.1.{i % 2}.{i % 4}",
                 user_agent=f"agent/{i % 3}", metadata={"secret": "m"}) for i in range(40)]
    red = [Event(**{f: getattr(e, f) for f in ("event_id", "ts_ms", "tenant_id", "api_key_id",
                                               "prompt", "client_ip", "user_agent", "metadata")})
           for e in raw]
    PromptVectors(emb).embed(raw)
    Redactor(PromptVectors(emb), salt="pepper")(red)
    red = decode_batch(encode_batch(red))
    same = lambda f: len({(getattr(a, f), getattr(b, f)) for a, b in zip(raw, red)}) == len(
        {getattr(a, f) for a in raw}) == len({getattr(b, f) for b in red})
    for a, b in zip(raw, red):
        assert prompt_bits(b.prompt) == prompt_bits(a.prompt)
        assert b.embedding.tolist() == a.embedding.tolist()
        assert b.extra["provided_embedding"] is False and b.extra["prompt_column"] == ""
        assert b.metadata is None
        for f in ("prompt", "client_ip", "user_agent", "api_key_id"):
            assert getattr(a, f) not in orjson.dumps([b.prompt, b.client_ip, b.user_agent,
                                                      b.api_key_id]).decode()
    for f in ("api_key_id", "client_ip", "user_agent"):
        assert same(f), f   # one pseudonym per value, a different one per different value
    assert len({client_hash(b.user_agent, b.client_ip) for b in red}) == len(
        {client_hash(a.user_agent, a.client_ip) for a in raw})
    # the address keeps a pseudonym of its /24: the campaign stage compares prefixes
    assert len({b.client_ip.split(".")[0] for b in red}) == 2


@pytest.mark.integration
def test_internal_topic_carries_no_raw_prompt_address_agent_or_key(kafka, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer

    from pipeline.kafka_options import kafka_python_options
    w = make_worker(kafka, tmp_path).start()   # default settings: STORE_PROMPTS unset
    secrets = []
    try:
        p = KafkaProducer(**kafka_python_options(w.settings))
        for i in range(30):
            ev = {"event_id": f"e{i}", "ts": 1767225600000 + i * 1000, "tenant_id": "acme",
                  "prompt": f"CONFIDENTIAL-PROMPT-{i} please summarise our merger plan",
                  "client_ip": f"198.51.100.{i}", "user_agent": f"SecretAgent/{i}",
                  "api_key_id": f"sk-live-{i:04d}", "metadata": {"note": f"META-{i}"}}
            secrets += [ev["prompt"], ev["client_ip"], ev["user_agent"], ev["api_key_id"],
                        f"META-{i}"]
            p.send(w.settings.topic_logs, orjson.dumps(ev))
        p.flush()
        p.close()
        w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= 30)
        stored = w.query("SELECT api_key_id, prompt, has_prompt, has_embedding "
                         "FROM coverwatch.events FINAL")
    finally:
        w.stop(signal.SIGKILL)
    c = KafkaConsumer(w.settings.topic_events, **kafka_python_options(w.settings),
                      auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=5000)
    values = [m.value for m in c]
    c.close()
    events = [e for v in values for e in decode_batch(v)]
    assert len(events) >= 30
    blob = b"".join(values)
    for s in secrets:
        assert s.encode() not in blob, s
    for e in events:
        assert e.embedding is not None and len(e.embedding) == 384
        i = int(e.event_id[1:])
        assert prompt_bits(e.prompt) == prompt_bits(
            f"CONFIDENTIAL-PROMPT-{i} please summarise our merger plan")
    assert len(stored) == 30
    assert all(key not in secrets and prompt == "" and has_prompt == 1 and has_emb == 0
               for key, prompt, has_prompt, has_emb in stored)
