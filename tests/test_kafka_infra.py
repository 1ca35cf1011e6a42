"""infra/kafka.sh + pipeline.testing.kafka against a real Kafka 4.x broker.

Both Python clients the project uses must speak Kafka 4's protocol (KIP-896 removed the
pre-2.1 request versions): kafka-python produces, aiokafka (what Faust runs on) consumes
in a consumer group, and the reverse.
"""
from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from pipeline.testing.kafka import KAFKA_SH, KafkaBroker

pytestmark = pytest.mark.integration

N = 100


@pytest.fixture(scope="module")
def broker():
    # its own broker (not the session one): this test stops and restarts it
    b = KafkaBroker()
    b.start()
    yield b
    b.close()


def test_kafka_python_to_aiokafka_roundtrip(broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaConsumer, KafkaProducer

    broker.create_topics({"infra-roundtrip": 4, "infra-reverse": 4})
    broker.create_topics({"infra-roundtrip": 4})  # idempotent

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    for i in range(N):
        producer.send("infra-roundtrip", key=f"tenant-{i % 7}".encode(),
                      value=json.dumps({"i": i}).encode())
    producer.flush()
    producer.close()

    async def consume(topic: str, group: str) -> list[tuple[int, bytes, bytes]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        got = []
        try:
            async with asyncio.timeout(60):
                while len(got) < N:
                    batches = await consumer.getmany(timeout_ms=500)
                    for tp, msgs in batches.items():
                        got += [(tp.partition, m.key, m.value) for m in msgs]
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(consume("infra-roundtrip", "infra-aio"))
    assert sorted(json.loads(v)["i"] for _, _, v in got) == list(range(N))
    assert len({p for p, _, _ in got}) > 1, "4 partitions, keyed: expected several in use"
    by_key: dict[bytes, set[int]] = {}
    for p, k, _ in got:
        by_key.setdefault(k, set()).add(p)
    assert all(len(ps) == 1 for ps in by_key.values()), "a key must map to one partition"

    # reverse direction: aiokafka (idempotent producer) -> kafka-python consumer group
    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
        await p.start()
        try:
            for i in range(N):
                await p.send("infra-reverse", str(i).encode(), key=str(i % 5).encode())
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(produce())
    consumer = KafkaConsumer("infra-reverse", bootstrap_servers=broker.bootstrap,
                             group_id="infra-kp", auto_offset_reset="earliest",
                             consumer_timeout_ms=20000)
    values = []
    for msg in consumer:
        values.append(int(msg.value))
        if len(values) == N:
            break
    consumer.commit()
    consumer.close()
    assert sorted(values) == list(range(N))


def test_consume_prints_a_topic(broker):
    """`infra/kafka.sh consume TOPIC` (what `make run` tells users to read alerts with)
    prints the topic's messages from the beginning."""
    from kafka import KafkaProducer
    broker.create_topics({"infra-consume": 1})
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(3):
        p.send("infra-consume", json.dumps({"alert": i}).encode())
    p.flush()
    p.close()
    out = subprocess.run(["bash", str(KAFKA_SH), "consume", "--port", str(broker.port),
                          "infra-consume", "--", "--max-messages", "3", "--timeout-ms", "30000"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")] \
        == [{"alert": 0}, {"alert": 1}, {"alert": 2}]


def test_start_is_idempotent_and_restart_keeps_data(broker):
    pid = broker.pid
    assert pid is not None
    # second start with the same ports/data: no new process
    assert broker.start() == broker.bootstrap
    assert broker.pid == pid
    status = subprocess.run(["bash", str(KAFKA_SH), "status", "--data", str(broker.data_dir)],
                            capture_output=True, text=True)
    assert status.returncode == 0 and f"bootstrap={broker.bootstrap}" in status.stdout

    broker.stop()
    assert broker.pid is None
    broker.stop()  # stopping a stopped broker is fine
    status = subprocess.run(["bash", str(KAFKA_SH), "status", "--data", str(broker.data_dir)],
                            capture_output=True, text=True)
    assert status.returncode == 3

    # crash + restart on the same ports and data: earlier messages are still there
    broker.start()
    broker.kill()
    assert broker.pid is None
    broker.restart()
    from kafka import KafkaConsumer
    consumer = KafkaConsumer("infra-roundtrip", bootstrap_servers=broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=20000)
    n = 0
    for _ in consumer:
        n += 1
        if n == N:
            break
    consumer.close()
    assert n == N


def test_consume_all_returns_surplus_messages(kafka, tmp_path):
    """consume_all reads past the expected count until the topic is quiet: a surplus
    message (a duplicate alert) reaches the caller's exact comparison."""
    import orjson
    from kafka import KafkaProducer

    from pipeline.testing.worker import isolated_settings
    from tests.conftest import consume_all
    s = isolated_settings(kafka.bootstrap, tmp_path)
    kafka.create_topics({s.topic_alerts: 1})
    import threading
    import time
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    p.send(s.topic_alerts, orjson.dumps({"n": 0}))
    p.flush()

    def late():              # the surplus arrives after the expected message was read
        time.sleep(1.5)
        for i in (1, 2):
            p.send(s.topic_alerts, orjson.dumps({"n": i}))
        p.flush()
    t = threading.Thread(target=late)
    t.start()
    got = consume_all(s, s.topic_alerts, 1, quiet_s=4)
    t.join()
    p.close()
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_a_sasl_broker_serves_only_clients_that_log_in(tmp_path):
    """`make run`'s broker (`infra/kafka.sh start --sasl`): the worker's two Kafka clients
    (kafka-python, aiokafka) log in with the settings `infra/kafka.sh env` prints; a client
    without them, or with a wrong password, cannot even read the topic list."""
    import os
    import stat

    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.errors import KafkaError

    from pipeline.kafka_options import aiokafka_options, kafka_python_options
    from pipeline.settings import Settings

    with KafkaBroker(sasl=True) as b:
        env = b.credentials
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", env
        creds = b.data_dir / "credentials.env"
        assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(b.data_dir / "server.properties").st_mode) == 0o600
        s = Settings(kafka_bootstrap=env["KAFKA_BOOTSTRAP"],
                     kafka_security_protocol=env["KAFKA_SECURITY_PROTOCOL"],
                     kafka_sasl_mechanism=env["KAFKA_SASL_MECHANISM"],
                     kafka_sasl_username=env["KAFKA_SASL_USERNAME"],
                     kafka_sasl_password=env["KAFKA_SASL_PASSWORD"])
        for bad in ({}, {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                         "sasl_plain_username": "coverwatch", "sasl_plain_password": "guess"}):
            with pytest.raises(KafkaError):
                KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=4000,
                                 bootstrap_timeout_ms=5000, **bad).list_topics()
        def kafka_sh(*args: str) -> str:     # as `make run` and its users call it
            out = subprocess.run(["bash", str(KAFKA_SH), args[0], "--data", str(b.data_dir),
                                  *args[1:]],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            return out.stdout
        assert "created sasl-roundtrip (2 partitions)" in kafka_sh("topics", "sasl-roundtrip:2")
        producer = KafkaProducer(**kafka_python_options(s), acks="all")
        for i in range(N):
            producer.send("sasl-roundtrip", key=b"t", value=str(i).encode())
        producer.flush()
        producer.close()
        printed = kafka_sh("consume", "sasl-roundtrip", "--", "--max-messages", "3",
                           "--timeout-ms", "30000")
        assert printed.split() == ["0", "1", "2"], printed

        async def consume() -> int:
            c = AIOKafkaConsumer("sasl-roundtrip", **aiokafka_options(s), group_id="g",
                                 auto_offset_reset="earliest")
            await c.start()
            got = 0
            try:
                async with asyncio.timeout(60):
                    while got < N:
                        got += sum(len(m) for m in (await c.getmany(timeout_ms=500)).values())
            finally:
                await c.stop()
            return got
        assert asyncio.run(consume()) == N
