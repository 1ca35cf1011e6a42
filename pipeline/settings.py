"""One frozen settings object, built once from the environment by the CLI and passed down.

Nothing below ``pipeline/`` reads the environment except :meth:`Settings.from_env`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _number(env, name: str, default, cast):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise SystemExit(f"{name}={raw!r} is not {kind}") from None


def _int(env, name: str, default: int) -> int:
    return _number(env, name, default, int)


def _float(env, name: str, default: float) -> float:
    return _number(env, name, default, float)


RELEASE = 0.5   # the coverwatch detector's default release level (an episode closes below it)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    # Kafka security: PLAINTEXT by default; SASL/SSL settings come from configuration only.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    clickhouse_dsn: str = f"chdb://{REPO_ROOT / 'var' / 'clickhouse'}"
    topic_logs: str = "api-logs"
    topic_dlq: str = "api-logs-dlq"
    topic_alerts: str = "alerts"
    topic_events: str = "coverwatch-events"       # validated events, keyed by tenant
    partitions: int = 4
    embedding_dim: int = 384
    embedder: str = "hashing"
    vector_cache: int = 65_536      # recent prompts whose vectors are kept (~1.6 KB each at 384)
    app_id: str = "coverwatch"
    processes: int = 1              # worker processes of this app (one consumer group)
    data_dir: str = str(REPO_ROOT / "var" / "worker")
    web_port: int = 6066
    web_host: str = "127.0.0.1"     # the interface the web port binds ("0.0.0.0": all)
    query_token: str = ""           # /query needs it when set; unset: loopback peers only
    web_tls_cert: str = ""          # PEM certificate chain: the web port serves HTTPS only
    web_tls_key: str = ""           # its PEM private key (both, or neither)
    query_timeout_s: int = 30       # /query limits, enforced by the engine (readonly=1)
    query_max_rows: int = 100_000
    query_max_memory_mb: int = 1024
    query_concurrency: int = 2      # queries at a time; more get 429
    stall_s: float = 60.0           # /health fails when nothing was stored this long with lag
    tenant_idle_hours: int = 168    # a tenant idle this long (event time) expires
    max_tenants: int = 200_000      # live tenants per worker; beyond, the least recent wait
    table_store: str = "rocksdb"    # tenant-state table: on disk ("rocksdb") or "memory"
                                    # in the table (checkpoint bytes) until they send again
    store_prompts: str = "none"     # none | hash | text
    prompt_salt: str = ""
    sink_batch: int = 5_000
    sink_within_s: float = 0.25     # a detect batch waits at most this for more messages
    stream_buffer: int = 16         # internal messages (up to 8 MB each) read ahead, and per batch
    changelog_pending: int = 2_000  # tenant-state writes queued for the changelog before a batch waits
    malloc_mmap_threshold: int = 1 << 20   # glibc: allocations this big go to mmap (0: glibc's)
    detector: str = "coverwatch"
    prior: str = "text"                # population prior: text | provided | none
    threshold: float = 1.0             # coverwatch: window score at which an alert opens
    campaigns: bool = True             # the coordinated-campaign stage
    topic_summaries: str = "coverwatch-summaries"   # account summaries -> campaign stage
    topic_checkpoints: str = "coverwatch-checkpoints"   # global models, compacted
    input_format: str = "coverwatch"   # coverwatch | otel-genai | litellm | kong | bedrock
    input_keyed: bool = False          # api-logs is keyed by tenant: no repartition hop
    fault_file: str = ""               # tests only: while this file exists, inserts fail
    adapter_options: str = ""          # JSON object, e.g. {"tenant_field": "user_api_key_team_id"}

    @classmethod
    def from_env(cls, env=None, **overrides) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        s = cls(
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            kafka_security_protocol=env.get("KAFKA_SECURITY_PROTOCOL", d.kafka_security_protocol),
            kafka_sasl_mechanism=env.get("KAFKA_SASL_MECHANISM", ""),
            kafka_sasl_username=env.get("KAFKA_SASL_USERNAME", ""),
            kafka_sasl_password=env.get("KAFKA_SASL_PASSWORD", ""),
            kafka_ssl_cafile=env.get("KAFKA_SSL_CAFILE", ""),
            clickhouse_dsn=env.get("CLICKHOUSE_DSN", d.clickhouse_dsn),
            topic_logs=env.get("TOPIC_API_LOGS", d.topic_logs),
            topic_dlq=env.get("TOPIC_DLQ", d.topic_dlq),
            topic_alerts=env.get("TOPIC_ALERTS", d.topic_alerts),
            topic_events=env.get("TOPIC_EVENTS", d.topic_events),
            partitions=_int(env, "TOPIC_PARTITIONS", d.partitions),
            embedding_dim=_int(env, "EMBEDDING_DIM", d.embedding_dim),
            embedder=env.get("COVERWATCH_EMBEDDER", d.embedder),
            vector_cache=_int(env, "COVERWATCH_VECTOR_CACHE", d.vector_cache),
            app_id=env.get("COVERWATCH_APP_ID", d.app_id),
            processes=_int(env, "COVERWATCH_PROCESSES", d.processes),
            data_dir=env.get("COVERWATCH_DATA_DIR", d.data_dir),
            web_port=_int(env, "COVERWATCH_WEB_PORT", d.web_port),
            web_host=env.get("COVERWATCH_WEB_HOST", d.web_host),
            query_token=env.get("COVERWATCH_QUERY_TOKEN", ""),
            web_tls_cert=env.get("COVERWATCH_WEB_TLS_CERT", ""),
            web_tls_key=env.get("COVERWATCH_WEB_TLS_KEY", ""),
            query_timeout_s=_int(env, "COVERWATCH_QUERY_TIMEOUT_S", d.query_timeout_s),
            query_max_rows=_int(env, "COVERWATCH_QUERY_MAX_ROWS", d.query_max_rows),
            query_max_memory_mb=_int(env, "COVERWATCH_QUERY_MAX_MEMORY_MB",
                                     d.query_max_memory_mb),
            query_concurrency=_int(env, "COVERWATCH_QUERY_CONCURRENCY", d.query_concurrency),
            stall_s=float(_int(env, "COVERWATCH_STALL_S", int(d.stall_s))),
            tenant_idle_hours=_int(env, "COVERWATCH_TENANT_IDLE_HOURS", d.tenant_idle_hours),
            max_tenants=_int(env, "COVERWATCH_MAX_TENANTS", d.max_tenants),
            table_store=env.get("COVERWATCH_TABLE_STORE", d.table_store),
            store_prompts=env.get("COVERWATCH_STORE_PROMPTS", d.store_prompts),
            prompt_salt=env.get("COVERWATCH_PROMPT_SALT", ""),
            sink_batch=_int(env, "COVERWATCH_SINK_BATCH", d.sink_batch),
            stream_buffer=_int(env, "COVERWATCH_STREAM_BUFFER", d.stream_buffer),
            changelog_pending=_int(env, "COVERWATCH_CHANGELOG_PENDING", d.changelog_pending),
            malloc_mmap_threshold=_int(env, "COVERWATCH_MALLOC_MMAP_THRESHOLD",
                                       d.malloc_mmap_threshold),
            detector=env.get("COVERWATCH_DETECTOR", d.detector),
            prior=env.get("COVERWATCH_PRIOR", d.prior),
            threshold=_float(env, "COVERWATCH_THRESHOLD", d.threshold),
            campaigns=env.get("COVERWATCH_CAMPAIGNS", "1") not in ("0", "false", "no"),
            topic_summaries=env.get("TOPIC_SUMMARIES", d.topic_summaries),
            topic_checkpoints=env.get("TOPIC_CHECKPOINTS", d.topic_checkpoints),
            input_format=env.get("COVERWATCH_INPUT_FORMAT", d.input_format),
            input_keyed=env.get("COVERWATCH_INPUT_KEYED", "0") in ("1", "true", "yes"),
            adapter_options=env.get("COVERWATCH_ADAPTER_OPTIONS", ""),
            fault_file=env.get("COVERWATCH_FAULT_FILE", ""),
        )
        if s.store_prompts not in ("none", "hash", "text"):
            raise SystemExit("COVERWATCH_STORE_PROMPTS must be none, hash or text")
        if s.table_store not in ("rocksdb", "memory"):
            raise SystemExit("COVERWATCH_TABLE_STORE must be rocksdb or memory")
        if s.processes < 0:
            raise SystemExit("COVERWATCH_PROCESSES must be 0 (one per CPU) or more")
        if s.stream_buffer < 1 or s.changelog_pending < 1 or s.malloc_mmap_threshold < 0:
            raise SystemExit("COVERWATCH_STREAM_BUFFER and COVERWATCH_CHANGELOG_PENDING must be "
                             ">= 1, COVERWATCH_MALLOC_MMAP_THRESHOLD >= 0")
        if bool(s.web_tls_cert) != bool(s.web_tls_key):
            raise SystemExit("COVERWATCH_WEB_TLS_CERT and COVERWATCH_WEB_TLS_KEY go together "
                             "(a certificate chain and its private key, PEM files)")
        if s.prior not in ("text", "provided", "none"):
            raise SystemExit("COVERWATCH_PRIOR must be text, provided or none")
        if not s.threshold > RELEASE:
            raise SystemExit(f"COVERWATCH_THRESHOLD must be above {RELEASE} (where an open "
                             "alert episode closes)")
        return replace(s, **overrides) if overrides else s

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb://")
