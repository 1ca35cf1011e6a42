-- coverwatch schema v2. A retried insert (same insert_deduplication_token) was dropped by
-- `events` but still reached `tenant_minutes` through the materialised view, whose target
-- had no deduplication window: its sums (novel, tokens) counted the batch twice
-- (tests/test_sink.py, tests/test_analyst.py::test_doc_query_tenant_hourly).
ALTER TABLE coverwatch.tenant_minutes MODIFY SETTING non_replicated_deduplication_window = 10000;
