-- coverwatch schema v1. Applied in order by pipeline.sinks.clickhouse.apply_migrations;
-- every statement is idempotent, and applied versions are recorded in schema_migrations.
CREATE DATABASE IF NOT EXISTS coverwatch;

CREATE TABLE IF NOT EXISTS coverwatch.schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version;

-- One slim row per accepted event. ReplacingMergeTree on event_id: an event delivered twice
-- (upstream at-least-once, or a worker restart) collapses to one row; read with FINAL or
-- count(DISTINCT event_id). Retention counts from ingestion, so replayed history stays
-- queryable for the retention period.
CREATE TABLE IF NOT EXISTS coverwatch.events
(
    ts DateTime64(3, 'UTC'),
    tenant_id String,
    event_id String,
    api_key_id String,
    model LowCardinality(String),
    endpoint LowCardinality(String),
    input_tokens UInt32,
    output_tokens UInt32,
    latency_ms Float32,
    status UInt16,
    has_prompt UInt8,
    has_embedding UInt8,
    prompt String,
    cell UInt64,
    novel UInt8,
    score Float32,
    drift Float32,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, ts, event_id)
TTL toDateTime(ingested_at) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Per tenant per minute, kept by a materialised view over events. uniq states make the
-- counts exact under duplicate delivery (queries counts distinct event ids).
CREATE TABLE IF NOT EXISTS coverwatch.tenant_minutes
(
    tenant_id String,
    minute DateTime('UTC'),
    queries AggregateFunction(uniqExact, String),
    cells AggregateFunction(uniq, UInt64),
    novel SimpleAggregateFunction(sum, UInt64),
    input_tokens SimpleAggregateFunction(sum, UInt64),
    output_tokens SimpleAggregateFunction(sum, UInt64),
    max_score SimpleAggregateFunction(max, Float32),
    max_drift SimpleAggregateFunction(max, Float32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute)
TTL minute + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS coverwatch.tenant_minutes_mv TO coverwatch.tenant_minutes AS
SELECT
    tenant_id,
    toStartOfMinute(ts) AS minute,
    uniqExactState(event_id) AS queries,
    uniqState(cell) AS cells,
    sum(toUInt64(novel)) AS novel,
    sum(toUInt64(input_tokens)) AS input_tokens,
    sum(toUInt64(output_tokens)) AS output_tokens,
    max(score) AS max_score,
    max(drift) AS max_drift
FROM coverwatch.events
GROUP BY tenant_id, minute;

-- The alert contract. A campaign alert is re-emitted under the same alert_id as members are
-- added; `version` keeps the newest. Read with FINAL (or argMax) to count each alert once.
CREATE TABLE IF NOT EXISTS coverwatch.alerts
(
    alert_id String,
    ts DateTime64(3, 'UTC'),
    emitted_at DateTime64(3, 'UTC'),
    tenant_id String,
    severity LowCardinality(String),
    detector LowCardinality(String),
    score Float64,
    threshold Float64,
    events_seen UInt64,
    related_tenants Array(String),
    summary String,
    evidence String,
    detector_version LowCardinality(String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, alert_id)
SETTINGS non_replicated_deduplication_window = 10000;
