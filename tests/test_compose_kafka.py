"""The Kafka of ``infra/docker-compose.yml`` serves only clients that log in (issue 15).

No Docker engine runs here, so the test does what the ``apache/kafka`` image does with the
service's definition, on the real broker from the jars: Compose's interpolation of
``${VAR:?msg}`` (and its refusal when the variable is unset); the image's turning of
``KAFKA_*`` variables into ``server.properties`` (its ``ConvertKey`` rules, its exclusions,
and its silent dropping of any value holding an ``=``, which is why the login is a JAAS file
and not a property); the JAAS file from the ``configs:`` entry, passed as ``KAFKA_OPTS``.
Host names and ports become free loopback ports. Then: an anonymous client and a wrong
password are refused, the worker's own settings round-trip a message, and the healthcheck's
client properties with the inherited ``KAFKA_OPTS`` list the topics.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml   # the `test` extra: a missing install must fail, not skip

from pipeline.testing.kafka import KAFKA_SH, REPO_ROOT, free_port

pytestmark = pytest.mark.integration

COMPOSE = REPO_ROOT / "infra" / "docker-compose.yml"
LIB = REPO_ROOT / "infra" / "kafka" / ".cache" / "lib"
# apache/kafka docker/resources/common-scripts/kafka-propertiesSpec.json
EXCLUDES = {"KAFKA_VERSION", "KAFKA_HEAP_OPT", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS",
            "KAFKA_JMX_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS",
            "KAFKA_LOG4J_ROOT_LOGLEVEL", "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL"}
# a refused client gives up after 5 s instead of kafka-python's 30 (same keys as the login's)
QUICK = {"request_timeout_ms": 3000, "bootstrap_timeout_ms": 5000}
SECRETS = {"KAFKA_PASSWORD": "pw-" + uuid.uuid4().hex, "CLICKHOUSE_PASSWORD": "ch",
           "COVERWATCH_QUERY_TOKEN": "tok"}


def interpolate(value, env: dict):
    """Compose's ``${VAR}``, ``${VAR:?message}`` and ``$$`` in every string of ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, _, message = m.group(1).partition(":?")
        if name not in env:
            raise ValueError(f"required variable {name} is missing a value: {message}")
        return env[name]
    return re.sub(r"\$\$|\$\{([^}]+)\}", one, value)


def convert_key(key: str) -> str:
    """The image's ``ConvertKey``: ``_`` -> ``.``, ``__`` -> ``_``, ``___`` -> ``-``."""
    key = re.sub(r"[^_]_[^_]", lambda m: m.group(0).replace("_", "."), key)
    return key.replace("___", "-").replace("__", "_").lower()


def server_properties(environment: dict) -> dict:
    """The ``server.properties`` the image renders from the service's environment."""
    out = {}
    for k, v in environment.items():
        v = str(v)
        if not k.startswith("KAFKA_") or k in EXCLUDES or len(f"{k}={v}".split("=")) != 2:
            continue
        out[convert_key(k[len("KAFKA_"):])] = v
    return out


def test_convert_key_follows_the_image():
    assert convert_key("LISTENER_SECURITY_PROTOCOL_MAP") == "listener.security.protocol.map"
    assert convert_key("SASL_MECHANISM_INTER_BROKER_PROTOCOL") == \
        "sasl.mechanism.inter.broker.protocol"
    assert convert_key("A__B___C_D") == "a_b-c.d"


def test_compose_refuses_to_start_without_a_kafka_password():
    spec = yaml.safe_load(COMPOSE.read_text())
    with pytest.raises(ValueError, match="KAFKA_PASSWORD"):
        interpolate(spec, {k: v for k, v in SECRETS.items() if k != "KAFKA_PASSWORD"})


def test_the_compose_kafka_serves_only_clients_that_log_in(tmp_path):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    from pipeline.kafka_options import kafka_python_options
    from pipeline.settings import Settings

    spec = interpolate(yaml.safe_load(COMPOSE.read_text()), SECRETS)
    kafka = spec["services"]["kafka"]
    env = kafka["environment"]
    # what the image would write; no login may be lost to its "=" rule
    props = server_properties(env)
    assert "listener.name.internal.plain.sasl.jaas.config" not in props
    assert set(props["listener.security.protocol.map"].split(",")) == {
        "INTERNAL:SASL_PLAINTEXT", "CONTROLLER:SASL_PLAINTEXT", "HOST:SASL_PLAINTEXT"}
    assert all(str(p).startswith("127.0.0.1:") for p in kafka["ports"]), kafka["ports"]

    # the compose network's names and ports -> free loopback ports
    ports = {"9092": free_port(), "9093": free_port(), "9094": free_port()}
    local = {}
    for k, v in props.items():
        for name in ("kafka", "localhost", ""):
            for p, q in ports.items():
                v = v.replace(f"//{name}:{p}", f"//127.0.0.1:{q}").replace(
                    f"@{name}:{p}", f"@127.0.0.1:{q}")
        local[k] = v
    local["log.dirs"] = str(tmp_path / "data")
    local.update({"offsets.topic.num.partitions": "4", "transaction.state.log.num.partitions": "4"})
    conf = tmp_path / "server.properties"
    conf.write_text("".join(f"{k}={v}\n" for k, v in sorted(local.items())))
    # the JAAS file from configs:, where KAFKA_OPTS says it is
    target = next(c["target"] for c in kafka["configs"] if c["source"] == "kafka_jaas")
    jaas = tmp_path / "kafka.conf"
    jaas.write_text(spec["configs"]["kafka_jaas"]["content"])
    opts = [o.replace(target, str(jaas)) for o in shlex.split(env["KAFKA_OPTS"])]
    assert any(str(jaas) in o for o in opts), env["KAFKA_OPTS"]

    subprocess.run(["bash", str(KAFKA_SH), "fetch"], check=True, capture_output=True,
                   timeout=600)
    java = ["java", "-Xms128m", "-Xmx512m", "-XX:TieredStopAtLevel=1", *opts,
            f"-Dkafka.logs.dir={tmp_path}",
            f"-Dlog4j2.configurationFile={REPO_ROOT / 'infra' / 'kafka' / 'log4j2.yaml'}",
            "-cp", f"{LIB}/*"]
    subprocess.run([*java, "kafka.tools.StorageTool", "format", "--cluster-id",
                    "MkU3OEVBNTcwNTJENDM2Qk", "-c", str(conf), "--ignore-formatted"],
                   check=True, capture_output=True, timeout=120)
    log = open(tmp_path / "broker.out", "wb")
    broker = subprocess.Popen([*java, "kafka.Kafka", str(conf)], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the worker service's own environment, read as the worker reads it, pointed at the
        # compose network's listener
        w = {k: str(v) for k, v in spec["services"]["worker"]["environment"].items()}
        s = Settings.from_env(w, kafka_bootstrap=f"127.0.0.1:{ports['9092']}")
        assert s.kafka_sasl_password == SECRETS["KAFKA_PASSWORD"], "the worker has no login"
        login = kafka_python_options(s)
        deadline = time.monotonic() + 120
        while True:
            assert broker.poll() is None, (tmp_path / "broker.out").read_text()[-3000:]
            try:
                KafkaAdminClient(**login, **QUICK).list_topics()
                break
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        for bad in ({}, {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                         "sasl_plain_username": "coverwatch", "sasl_plain_password": "guess"}):
            for port in ports.values():           # the controller's port too
                with pytest.raises(KafkaError):
                    KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", **QUICK,
                                     **bad).list_topics()
        producer = KafkaProducer(**login, acks="all")
        producer.send("compose-login", b"hello").get(timeout=60)
        producer.close()
        host = dict(login, bootstrap_servers=f"127.0.0.1:{ports['9094']}")  # published port
        consumer = KafkaConsumer("compose-login", **host, auto_offset_reset="earliest",
                                 consumer_timeout_ms=30000)
        assert next(consumer).value == b"hello"
        consumer.close()
        # the healthcheck: its client properties, the tools inheriting the service's KAFKA_OPTS
        check = kafka["healthcheck"]["test"][1]
        health = tmp_path / "health.properties"
        printf = check.split(">/tmp/health.properties")[0].replace("$$", "$")
        health.write_text(subprocess.run(["bash", "-c", printf], capture_output=True,
                                         text=True, check=True).stdout)
        assert "--command-config /tmp/health.properties" in check
        out = subprocess.run([*java, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                              f"127.0.0.1:{ports['9092']}", "--command-config", str(health),
                              "--list"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "compose-login" in out.stdout, out.stderr[-2000:]
    finally:
        os.killpg(broker.pid, 15)
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(broker.pid, 9)
        log.close()
