"""pipeline/kafka_options.py: the security settings mean the same for every Kafka client."""
from __future__ import annotations

import ssl

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import to_credentials

from pipeline.kafka_options import aiokafka_options, faust_credentials, kafka_python_options
from pipeline.settings import Settings

CAFILE = ssl.get_default_verify_paths().cafile or ""


def settings(protocol: str, **kw) -> Settings:
    return Settings(kafka_bootstrap="k1:9093, k2:9093", kafka_security_protocol=protocol,
                    kafka_sasl_username="svc", kafka_sasl_password="pw", **kw)


def faust_view(s: Settings) -> dict:
    """What Faust hands aiokafka for ``broker_credentials`` (as its settings convert it)."""
    return dict(credentials_to_aiokafka_auth(to_credentials(faust_credentials(s))))


def test_plaintext_sends_no_credentials_even_when_some_are_configured():
    s = settings("PLAINTEXT", kafka_sasl_mechanism="PLAIN", kafka_ssl_cafile=CAFILE)
    assert kafka_python_options(s) == {"bootstrap_servers": ["k1:9093", "k2:9093"],
                                       "security_protocol": "PLAINTEXT"}
    assert aiokafka_options(s) == kafka_python_options(s)
    assert faust_credentials(s) is None and faust_view(s) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism,expected", [("", "PLAIN"), ("scram-sha-512", "SCRAM-SHA-512")])
def test_sasl_plaintext(mechanism, expected):
    s = settings("SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism)
    sasl = {"sasl_mechanism": expected, "sasl_plain_username": "svc",
            "sasl_plain_password": "pw"}
    assert kafka_python_options(s) == {"bootstrap_servers": ["k1:9093", "k2:9093"],
                                       "security_protocol": "SASL_PLAINTEXT", **sasl}
    assert aiokafka_options(s) == kafka_python_options(s)
    assert faust_view(s) == {"security_protocol": "SASL_PLAINTEXT", "ssl_context": None, **sasl}


def test_sasl_ssl_with_a_ca_file():
    s = settings("SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256", kafka_ssl_cafile=CAFILE)
    py, aio, fa = kafka_python_options(s), aiokafka_options(s), faust_view(s)
    assert py["security_protocol"] == aio["security_protocol"] == fa["security_protocol"] \
        == "SASL_SSL"
    assert py["ssl_cafile"] == CAFILE and "ssl_context" not in py
    assert isinstance(aio["ssl_context"], ssl.SSLContext)
    assert isinstance(fa["ssl_context"], ssl.SSLContext)
    for opts in (py, aio, fa):
        assert (opts["sasl_mechanism"], opts["sasl_plain_username"],
                opts["sasl_plain_password"]) == ("SCRAM-SHA-256", "svc", "pw")


def test_ssl_without_sasl_ignores_sasl_settings():
    s = settings("SSL", kafka_sasl_mechanism="PLAIN")
    py, aio, fa = kafka_python_options(s), aiokafka_options(s), faust_view(s)
    assert py == {"bootstrap_servers": ["k1:9093", "k2:9093"], "security_protocol": "SSL"}
    assert aio["security_protocol"] == fa["security_protocol"] == "SSL"
    assert not any(k.startswith("sasl") for opts in (py, aio, fa) for k in opts)
    assert isinstance(aio["ssl_context"], ssl.SSLContext)


def test_an_unknown_protocol_is_refused():
    with pytest.raises(SystemExit, match="KAFKA_SECURITY_PROTOCOL"):
        kafka_python_options(settings("SASL_TLS"))
