#!/usr/bin/env bash
# `make run`: local Kafka + worker + embedded ClickHouse + live demo traffic with alerts.
# Ctrl-C stops everything this script started (a broker that was already running stays up).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${KAFKA_PORT:-9092}
export KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP:-127.0.0.1:$PORT}
export COVERWATCH_WEB_PORT=${COVERWATCH_WEB_PORT:-6066}
mkdir -p var

started_kafka=0
if ! bash infra/kafka.sh status --data var/kafka >/dev/null 2>&1; then
  # Each run is a fresh demo: a second run would otherwise restore the first one's tenants
  # (the sweeper re-sending prompts it already sent is no longer novel) and alert late or
  # never. The previous run's broker data, worker state and ClickHouse tables are kept in
  # var/previous-run (one run back) for analysts; KEEP_STATE=1 keeps them in place instead.
  state=(); for d in kafka worker clickhouse worker.log; do [ -e "var/$d" ] && state+=("var/$d"); done
  if [ "${KEEP_STATE:-0}" != 1 ] && [ ${#state[@]} -gt 0 ]; then
    rm -rf var/previous-run && mkdir -p var/previous-run && mv "${state[@]}" var/previous-run/
    echo "fresh demo state: the previous run's ${state[*]} moved to var/previous-run (KEEP_STATE=1 keeps them)"
  fi
  # --sasl: the broker serves only clients that log in (its password: var/kafka/credentials.env)
  bash infra/kafka.sh start --port "$PORT" --controller-port $((PORT + 1)) --data var/kafka --sasl
  started_kafka=1
else
  echo "a broker is already running on var/kafka: the worker resumes its state there, so the demo's"
  echo "tenants are not new and the first alert can come late (stop it for a fresh demo: make kafka-stop)"
fi
eval "$(bash infra/kafka.sh env --data var/kafka)"   # the worker and the demo log in with these
bash infra/kafka.sh topics --port "$PORT" api-logs:4 api-logs-dlq:1 alerts:1 coverwatch-events:4 coverwatch-summaries:1

worker_pid=""
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  if [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null; then
    for _ in $(seq 1 20); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$worker_pid" 2>/dev/null || true   # a worker stuck in shutdown must not hang us
  fi
  [ "$started_kafka" = 1 ] && bash infra/kafka.sh stop --data var/kafka || true
}
trap cleanup INT TERM EXIT

$BIN/coverwatch worker --loglevel warning > var/worker.log 2>&1 &
worker_pid=$!
echo "worker started (pid $worker_pid, log var/worker.log); waiting for it..."
web=(http://127.0.0.1:$COVERWATCH_WEB_PORT)   # HTTPS when the web port has a certificate
[ -n "${COVERWATCH_WEB_TLS_CERT:-}" ] && web=(https://127.0.0.1:$COVERWATCH_WEB_PORT --cacert "$COVERWATCH_WEB_TLS_CERT")
for _ in $(seq 1 120); do
  if curl -sf "${web[0]}/metrics" "${web[@]:1}" >/dev/null 2>&1; then break; fi
  kill -0 "$worker_pid" 2>/dev/null || { echo "worker died:"; tail -30 var/worker.log; exit 1; }
  sleep 1
done
cat <<MSG

coverwatch is running: Kafka at $KAFKA_BOOTSTRAP (clients log in: eval "\$(bash infra/kafka.sh env)"),
ClickHouse embedded under var/clickhouse.
Alerts go to the Kafka topic 'alerts' (printed below as they arrive) and to the ClickHouse
table coverwatch.alerts. While it runs, from another shell:
  .venv/bin/coverwatch top                  # riskiest tenants, with why
  .venv/bin/coverwatch query "SELECT ts, tenant_id, detector, severity, summary FROM coverwatch.alerts FINAL ORDER BY ts DESC LIMIT 10"
  .venv/bin/coverwatch query "SELECT tenant_id, count() FROM coverwatch.events GROUP BY tenant_id ORDER BY 2 DESC LIMIT 10"
  bash infra/kafka.sh consume alerts        # the raw alert messages on the topic
  curl -s localhost:$COVERWATCH_WEB_PORT/metrics
Streaming demo traffic now; alerts print below as they arrive. Ctrl-C stops everything.

MSG
$BIN/coverwatch demo
