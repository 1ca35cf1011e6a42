"""TLS of the worker's web port (``/query``, ``/metrics``, ``/health``).

Off by default: the port binds loopback. Published beyond it, a token or a query result
would cross the network in clear, so ``COVERWATCH_WEB_TLS_CERT`` and ``_KEY`` (PEM files)
make the port serve HTTPS only.
"""
from __future__ import annotations

import ssl

from pipeline.settings import Settings


def server_context(s: Settings) -> ssl.SSLContext | None:
    """TLS 1.2 or later with the configured chain and key (None: plain HTTP). A file that
    cannot be loaded stops the worker with a clear message rather than serving plain HTTP."""
    if not s.web_tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(s.web_tls_cert, s.web_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"COVERWATCH_WEB_TLS_CERT / COVERWATCH_WEB_TLS_KEY: cannot load "
                         f"{s.web_tls_cert!r} with {s.web_tls_key!r}: {exc}") from None
    return ctx


def local_url(s: Settings) -> str:
    """The worker's web port as a process on the same host reaches it."""
    return f"{'https' if s.web_tls_cert else 'http'}://127.0.0.1:{s.web_port}"


def client_context(s: Settings) -> ssl.SSLContext | None:
    """How a process on the same host (``coverwatch query``) talks to that port: the
    worker's own certificate (a self-signed one) or the system's CAs vouch for it; its name
    is not checked, since the port is reached as 127.0.0.1."""
    if not s.web_tls_cert:
        return None
    ctx = ssl.create_default_context(cafile=s.web_tls_cert)
    ctx.load_default_certs()
    ctx.check_hostname = False
    return ctx
