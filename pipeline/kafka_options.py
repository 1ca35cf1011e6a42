"""Kafka connection options from the deployment's settings: one set of rules, three clients.

The worker's Faust app, its ingest consumer (aiokafka) and the command line's kafka-python
clients used to translate the security settings each their own way (one sent SASL options
only when a mechanism was named, another only under a SASL protocol). :func:`security`
decides once; the three functions below only spell the result in each client's words.

>>> s = Settings(kafka_bootstrap="a:9093,b:9093", kafka_security_protocol="SASL_PLAINTEXT",
...              kafka_sasl_username="u", kafka_sasl_password="p")
>>> kafka_python_options(s)["sasl_mechanism"], aiokafka_options(s)["bootstrap_servers"]
('PLAIN', ['a:9093', 'b:9093'])
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class Security:
    protocol: str
    sasl_mechanism: str | None = None   # None: no SASL
    username: str = ""
    password: str = ""
    ssl: bool = False
    cafile: str | None = None           # None: the system's trust store


def security(s: Settings) -> Security:
    """What the settings ask for; SASL fields count only under a SASL protocol, the CA
    file only under an SSL one (a stray setting never switches a client's mode)."""
    protocol = s.kafka_security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise SystemExit(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}")
    sasl = protocol.startswith("SASL_")
    ssl = protocol.endswith("SSL")
    return Security(protocol, (s.kafka_sasl_mechanism or "PLAIN").upper() if sasl else None,
                    s.kafka_sasl_username if sasl else "", s.kafka_sasl_password if sasl else "",
                    ssl, (s.kafka_ssl_cafile or None) if ssl else None)


def bootstrap(s: Settings) -> list[str]:
    return [h.strip() for h in s.kafka_bootstrap.split(",") if h.strip()]


def _ssl_context(sec: Security):
    import ssl
    return ssl.create_default_context(cafile=sec.cafile) if sec.ssl else None


def aiokafka_options(s: Settings) -> dict:
    """Keyword arguments for an aiokafka client (the worker's ingest consumer)."""
    sec = security(s)
    opts: dict = {"bootstrap_servers": bootstrap(s), "security_protocol": sec.protocol}
    if sec.ssl:
        opts["ssl_context"] = _ssl_context(sec)
    if sec.sasl_mechanism:
        opts.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.username,
                    sasl_plain_password=sec.password)
    return opts


def faust_credentials(s: Settings):
    """Faust's ``broker_credentials``: None, an SSL context, or SASL credentials."""
    sec = security(s)
    if sec.sasl_mechanism:
        import faust
        return faust.SASLCredentials(username=sec.username, password=sec.password,
                                     mechanism=sec.sasl_mechanism, ssl_context=_ssl_context(sec))
    return _ssl_context(sec)


def kafka_python_options(s: Settings) -> dict:
    """Keyword arguments for a kafka-python client (``produce``, ``demo``, tests)."""
    sec = security(s)
    opts: dict = {"bootstrap_servers": bootstrap(s), "security_protocol": sec.protocol}
    if sec.sasl_mechanism:
        opts.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.username,
                    sasl_plain_password=sec.password)
    if sec.cafile:
        opts["ssl_cafile"] = sec.cafile
    return opts
