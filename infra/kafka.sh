#!/usr/bin/env bash
# Single-node Apache Kafka 4.x (KRaft, combined broker+controller) from Maven Central jars.
#
#   infra/kafka.sh fetch                         resolve the jars into infra/kafka/.cache/lib (no-op if present)
#   infra/kafka.sh start [--port P] [--controller-port C] [--data DIR] [--sasl]
#                                                defaults 9092, 9093, <repo>/var/kafka; waits until ready.
#                                                --sasl: clients must log in (SASL/PLAIN, user
#                                                coverwatch, a random password made once and kept
#                                                in DIR/credentials.env, mode 0600); `make run` uses it
#   infra/kafka.sh env    [--data DIR]           print the KAFKA_* exports a client of that broker
#                                                needs: eval "$(bash infra/kafka.sh env)"
#   infra/kafka.sh stop   [--data DIR]           SIGTERM, up to 30 s, then SIGKILL
#   infra/kafka.sh status [--data DIR]           exit 0 running, 3 not running
#   infra/kafka.sh topics [--port P] NAME[:PARTITIONS] ...   create topics idempotently
#   infra/kafka.sh consume [--port P] TOPIC [-- CONSOLE-CONSUMER-OPTIONS]
#                                                print TOPIC's messages from the beginning,
#                                                then follow it (Ctrl-C stops); e.g.
#                                                `-- --max-messages 5 --timeout-ms 10000`
#
# Environment:
#   KAFKA_VERSION    Kafka version to fetch (default: the one in infra/kafka/pom.xml)
#   KAFKA_LIB_DIR    where the jars live (default infra/kafka/.cache/lib)
#   KAFKA_HEAP_OPTS  default "-Xms256m -Xmx1g"
#   KAFKA_JVM_OPTS   extra JVM flags
#   KAFKA_FAST_START=1   C1-only JIT (-XX:TieredStopAtLevel=1): ~2x faster start on a busy
#                    2-core box, lower peak throughput; the test helper sets it
#   KAFKA_CDS=0      disable the class-data-sharing archive (default on: the first broker
#                    run records <lib>/kafka.jsa at its graceful stop; later starts load it)
#   KAFKA_START_TIMEOUT  seconds to wait for readiness (default 90)
#   PYTHON           interpreter for the readiness probe / topic creation
#                    (default <repo>/.venv/bin/python, else python3)
#
# Only needs bash, Java 17+, Maven (first fetch) and Python 3 (stdlib; kafka-python for
# `topics`, with a fallback to the TopicCommand class from the jars).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
POM="$HERE/kafka/pom.xml"
LOG4J_CONF="$HERE/kafka/log4j2.yaml"
LIB_DIR="${KAFKA_LIB_DIR:-$HERE/kafka/.cache/lib}"
DEFAULT_VERSION="$(sed -n 's|.*<kafka.version>\(.*\)</kafka.version>.*|\1|p' "$POM" | head -n1)"
KAFKA_VERSION="${KAFKA_VERSION:-$DEFAULT_VERSION}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"

if [[ -n "${PYTHON:-}" ]]; then :
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"
else PYTHON="python3"; fi

PORT=9092
CONTROLLER_PORT=9093
DATA="$ROOT/var/kafka"
SASL=0

log() { echo "kafka.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "${BASH_SOURCE[0]}"; }

abspath() { mkdir -p "$1" && (cd "$1" && pwd); }

# ---------------------------------------------------------------- fetch
have_jars() {
    [[ -f "$LIB_DIR/.complete" ]] && [[ "$(cat "$LIB_DIR/.complete")" == "$KAFKA_VERSION" ]] \
        && compgen -G "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

cmd_fetch() {
    if have_jars; then return 0; fi
    command -v mvn >/dev/null || die "mvn not found (needed once, to fetch the Kafka jars)"
    local parent tmp mvnlog t0
    parent="$(dirname "$LIB_DIR")"
    mkdir -p "$parent"
    # resolve into a private dir, then swap it in: concurrent fetches never see half a dir
    tmp="$(mktemp -d "$parent/.lib.tmp.XXXXXX")"
    mvnlog="$tmp.mvn.log"
    t0=$SECONDS
    log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIB_DIR ..."
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
            -Dkafka.version="$KAFKA_VERSION" -Dkafka.lib.dir="$tmp" >"$mvnlog" 2>&1; then
        cat "$mvnlog" >&2
        rm -rf "$tmp" "$mvnlog"
        die "maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
    fi
    rm -f "$mvnlog"
    compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null || { rm -rf "$tmp"; die "kafka jar missing after fetch"; }
    echo "$KAFKA_VERSION" >"$tmp/.complete"
    if have_jars; then rm -rf "$tmp"; return 0; fi   # somebody else won the race
    rm -rf "$LIB_DIR.old"
    [[ -e "$LIB_DIR" ]] && mv "$LIB_DIR" "$LIB_DIR.old"
    mv "$tmp" "$LIB_DIR"
    rm -rf "$LIB_DIR.old"
    log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- helpers
parse_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --port) PORT="$2"; shift 2 ;;
            --port=*) PORT="${1#*=}"; shift ;;
            --controller-port) CONTROLLER_PORT="$2"; shift 2 ;;
            --controller-port=*) CONTROLLER_PORT="${1#*=}"; shift ;;
            --data) DATA="$2"; shift 2 ;;
            --data=*) DATA="${1#*=}"; shift ;;
            --sasl) SASL=1; shift ;;
            -h|--help) usage; exit 0 ;;
            --) shift; ARGS+=("$@"); break ;;
            -*) die "unknown option $1" ;;
            *) ARGS+=("$1"); shift ;;
        esac
    done
}

pid_file() { echo "$DATA/kafka.pid"; }

# pid of our broker if it is alive (and really is a Kafka JVM), else empty
live_pid() {
    local pf pid
    pf="$(pid_file)"
    [[ -f "$pf" ]] || return 0
    pid="$(cat "$pf" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'; then
        echo "$pid"
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Readiness probe: TCP connect + a Kafka Metadata (v4) request that must list >= 1 broker
# (a broker only appears in metadata once registered and unfenced). Stdlib only.
# On a --sasl broker the probe logs in first (SaslHandshake v1 + SaslAuthenticate v0, PLAIN).
metadata_ok() {
    "$PYTHON" - "$1" "$(sasl_user)" "$(sasl_password)" <<'PY' 2>/dev/null
import socket, struct, sys
port, user, password = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.settimeout(3)
    cid = b"coverwatch-probe"
    def send(api_key, version, corr, payload):
        # header v1: api_key, api_version, correlation_id, client_id
        head = struct.pack(">hhih", api_key, version, corr, len(cid)) + cid
        s.sendall(struct.pack(">i", len(head + payload)) + head + payload)
        (size,) = struct.unpack(">i", read(4))
        return read(size)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    if user:
        resp = send(17, 1, 5, struct.pack(">h", 5) + b"PLAIN")            # SaslHandshake
        if struct.unpack(">ih", resp[:6]) != (5, 0):
            sys.exit(1)
        token = b"\x00" + user + b"\x00" + password
        resp = send(36, 0, 6, struct.pack(">i", len(token)) + token)        # SaslAuthenticate
        if struct.unpack(">ih", resp[:6]) != (6, 0):
            sys.exit(1)
    # Metadata v4: topics=null (all), allow_auto_create=false
    resp = send(3, 4, 7, struct.pack(">i", -1) + b"\x00")
    corr, _throttle, nbrokers = struct.unpack(">iii", resp[:12])
    sys.exit(0 if corr == 7 and nbrokers >= 1 else 1)
except Exception:
    sys.exit(1)
PY
}

ready() { port_open "$1" && metadata_ok "$1"; }

configured_port() {
    sed -n 's|^advertised.listeners=[A-Z_]*://[^:]*:\([0-9]*\).*|\1|p' "$DATA/server.properties" 2>/dev/null | head -n1
}

# ---- SASL (--sasl): one user, its password made once per data dir and kept 0600
CREDS() { echo "$DATA/credentials.env"; }
sasl_on() { grep -q '^listeners=SASL_PLAINTEXT://' "$DATA/server.properties" 2>/dev/null; }
sasl_user() { if sasl_on; then sed -n 's/^KAFKA_SASL_USERNAME=//p' "$(CREDS)" 2>/dev/null; fi; }
sasl_password() { if sasl_on; then sed -n 's/^KAFKA_SASL_PASSWORD=//p' "$(CREDS)" 2>/dev/null; fi; }

ensure_credentials() {
    [[ -s "$(CREDS)" ]] && return 0
    local pw
    pw="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"
    (umask 077; printf '%s\n' "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT" "KAFKA_SASL_MECHANISM=PLAIN" \
        "KAFKA_SASL_USERNAME=coverwatch" "KAFKA_SASL_PASSWORD=$pw" >"$(CREDS).tmp")
    mv "$(CREDS).tmp" "$(CREDS)"
    log "made the broker's client credentials: $(CREDS) (mode 0600)"
}

# the Java tools' login options (console consumer, TopicCommand) for a --sasl broker: a
# client config in the data dir, mode 0600; nothing for a plaintext one
client_login() {  # client_login OPTION-NAME
    sasl_on || return 0
    local f="$DATA/client.properties"
    (umask 077; printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=PLAIN" \
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$(sasl_user)\" password=\"$(sasl_password)\";" >"$f")
    echo "$1"
    echo "$f"
}

log_tail() {
    local f
    for f in "$DATA/logs/kafkaServer.out" "$DATA/logs/server.log"; do
        [[ -s "$f" ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 40 "$f" >&2
    done
}

# ---- class-data-sharing (AppCDS) archive: JVM start is CPU-bound class loading, and this
# box has 2 cores. Java 17 has no auto-archive flag, so the first broker started with a
# given lib dir records one (-XX:ArchiveClassesAtExit, written at graceful exit), `stop`
# moves it to <lib>/kafka.jsa, and later starts map it. A mismatching archive is ignored
# by the JVM (-Xshare:auto), so the worst case is the normal start time.
JSA="$LIB_DIR/kafka.jsa"
JSA_LOCK="$LIB_DIR/.jsa.lock"

cds_flags() {  # fills the named array with the CDS flags for this start
    local -n out=$1
    [[ "${KAFKA_CDS:-1}" == 1 ]] || return 0
    if [[ -s "$JSA" ]]; then
        out=(-Xshare:auto -XX:SharedArchiveFile="$JSA" -Xlog:cds*=off)
        return 0
    fi
    # one recorder at a time; a lock whose owner data dir has no live broker is stale
    if ! mkdir "$JSA_LOCK" 2>/dev/null; then
        local owner; owner="$(cat "$JSA_LOCK/owner" 2>/dev/null || true)"
        if [[ -n "$owner" ]] && [[ -n "$(DATA="$owner" live_pid)" ]]; then return 0; fi
        rm -rf "$JSA_LOCK"; mkdir "$JSA_LOCK" 2>/dev/null || return 0
    fi
    echo "$DATA" >"$JSA_LOCK/owner"
    rm -f "$DATA/kafka.jsa.partial"
    out=(-XX:ArchiveClassesAtExit="$DATA/kafka.jsa.partial" -Xlog:cds*=off)
}

cds_publish() {  # after a stop: move a recorded archive into the lib dir
    [[ -d "$JSA_LOCK" ]] && [[ "$(cat "$JSA_LOCK/owner" 2>/dev/null)" == "$DATA" ]] || return 0
    if [[ -s "$DATA/kafka.jsa.partial" ]]; then
        cp "$DATA/kafka.jsa.partial" "$JSA.tmp.$$" && mv -f "$JSA.tmp.$$" "$JSA" \
            && log "recorded class-data-sharing archive $JSA (faster starts from now on)"
    fi
    rm -f "$DATA/kafka.jsa.partial"
    rm -rf "$JSA_LOCK"
}

write_properties() {
    local proto=PLAINTEXT cproto=PLAINTEXT
    (( SASL )) && proto=SASL_PLAINTEXT && cproto=SASL_PLAINTEXT
    (umask 077; : >"$DATA/server.properties")   # it holds the password under --sasl
    cat >>"$DATA/server.properties" <<EOF
# written by infra/kafka.sh start -- regenerated on every start, edit the script instead
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=$proto://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=$proto://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=$proto
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:$cproto
log.dirs=$DATA/data

# single node: every internal topic has replication factor 1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1

num.partitions=4
default.replication.factor=1
auto.create.topics.enable=true
# Large enough for a hostile 10 MB prompt to reach the worker and be dead-lettered.
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
delete.topic.enable=true
group.initial.rebalance.delay.ms=0

# after a crash (kill -9) the restarted broker must wait until the dead incarnation's
# session expires (default 9 s) before it can register; shorten that for fault tests
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000

# small footprint (2 cores): few threads, small segments, short retention
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=60000
metadata.log.segment.bytes=8388608
EOF
    if (( SASL )); then
        local user pw
        user="$(sed -n 's/^KAFKA_SASL_USERNAME=//p' "$(CREDS)")"
        pw="$(sed -n 's/^KAFKA_SASL_PASSWORD=//p' "$(CREDS)")"
        cat >>"$DATA/server.properties" <<EOF

# --sasl: every client logs in (SASL/PLAIN), on the controller port too (admin clients can
# reach a KRaft controller directly); the broker uses the same user for itself
sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$user" password="$pw" user_$user="$pw";
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$user" password="$pw" user_$user="$pw";
EOF
    fi
}

# ---------------------------------------------------------------- start
cmd_start() {
    parse_args "$@"
    DATA="$(abspath "$DATA")"
    mkdir -p "$DATA/logs" "$DATA/data"

    local pid
    pid="$(live_pid)"
    if [[ -n "$pid" ]]; then
        local cport; cport="$(configured_port)"
        [[ -n "$cport" && "$cport" != "$PORT" ]] && \
            die "a broker (pid $pid) already runs from $DATA on port $cport, not $PORT; stop it first"
        if (( SASL )) && ! sasl_on; then
            die "a broker (pid $pid) already runs from $DATA without --sasl; stop it first"
        fi
        if ready "$PORT"; then
            log "already running (pid $pid) on 127.0.0.1:$PORT"
            echo "127.0.0.1:$PORT"
            return 0
        fi
        log "broker pid $pid is alive but not ready yet; waiting"
    else
        rm -f "$(pid_file)"
        port_open "$PORT" && die "port $PORT is already in use by another process"
        port_open "$CONTROLLER_PORT" && die "controller port $CONTROLLER_PORT is already in use"

        cmd_fetch
        command -v java >/dev/null || die "java not found (Java 17+ required)"
        if (( SASL )); then ensure_credentials; fi
        write_properties

        local cp="$LIB_DIR/*"
        local jvm=(java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20
                   -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
                   -Djava.awt.headless=true -Dfile.encoding=UTF-8
                   -Dkafka.logs.dir="$DATA/logs"
                   -Dlog4j2.configurationFile="$LOG4J_CONF")
        [[ "${KAFKA_FAST_START:-0}" == 1 ]] && jvm+=(-XX:TieredStopAtLevel=1)
        local cds_opts=()
        cds_flags cds_opts
        jvm+=(${KAFKA_JVM_OPTS:-})

        if [[ ! -f "$DATA/data/meta.properties" ]]; then
            local cluster_id
            cluster_id="$("$PYTHON" -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())')"
            log "formatting storage in $DATA/data (cluster id $cluster_id)"
            if ! "${jvm[@]}" -Xmx256m -XX:TieredStopAtLevel=1 -cp "$cp" kafka.tools.StorageTool format \
                    --cluster-id="$cluster_id" -c "$DATA/server.properties" --ignore-formatted \
                    >"$DATA/logs/format.log" 2>&1; then
                cat "$DATA/logs/format.log" >&2
                die "storage format failed"
            fi
        fi

        # stdin/stdout/stderr detached from the caller, so a caller's subprocess pipes close
        nohup "${jvm[@]}" "${cds_opts[@]}" -cp "$cp" kafka.Kafka "$DATA/server.properties" \
            </dev/null >>"$DATA/logs/kafkaServer.out" 2>&1 &
        pid=$!
        echo "$pid" >"$(pid_file)"
        log "started broker pid $pid (logs in $DATA/logs), waiting for 127.0.0.1:$PORT"
    fi

    local deadline=$((SECONDS + START_TIMEOUT)) t0=$SECONDS
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail
            rm -f "$(pid_file)"
            die "broker exited during startup"
        fi
        if ready "$PORT"; then break; fi
        if (( SECONDS >= deadline )); then
            log_tail
            log "not ready after ${START_TIMEOUT}s; killing pid $pid"
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$(pid_file)"
            exit 1
        fi
        sleep 0.3
    done
    log "ready on 127.0.0.1:$PORT after $((SECONDS - t0)) s (pid $pid)"
    echo "127.0.0.1:$PORT"
}

# ---------------------------------------------------------------- stop / status
cmd_stop() {
    parse_args "$@"
    DATA="$(cd "$DATA" 2>/dev/null && pwd || echo "$DATA")"
    local pid
    pid="$(live_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$(pid_file)"
        cds_publish
        log "not running ($DATA)"
        return 0
    fi
    log "stopping broker pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    # a broker recording the CDS archive writes ~50 MB at exit: give it longer
    local grace=30
    [[ -d "$JSA_LOCK" && "$(cat "$JSA_LOCK/owner" 2>/dev/null)" == "$DATA" ]] && grace=120
    local deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        log "still alive after $grace s; SIGKILL"
        rm -f "$DATA/kafka.jsa.partial"   # possibly half-written
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$(pid_file)"
    cds_publish
    log "stopped"
}

cmd_status() {
    parse_args "$@"
    DATA="$(cd "$DATA" 2>/dev/null && pwd || echo "$DATA")"
    local pid port
    pid="$(live_pid)"
    port="$(configured_port)"
    if [[ -n "$pid" ]]; then
        if [[ -n "$port" ]] && ready "$port"; then
            echo "running pid=$pid bootstrap=127.0.0.1:$port data=$DATA"
        else
            echo "starting pid=$pid port=${port:-?} data=$DATA (not ready)"
        fi
        return 0
    fi
    echo "not running (data=$DATA)"
    return 3
}

# ---------------------------------------------------------------- topics
cmd_topics() {
    local port_given=0
    for a in "$@"; do [[ "$a" == --port* ]] && port_given=1; done
    parse_args "$@"
    if (( port_given == 0 )) && [[ -f "$DATA/server.properties" ]] && [[ -n "$(live_pid)" ]]; then
        PORT="$(configured_port)"
    fi
    [[ ${#ARGS[@]} -gt 0 ]] || die "usage: kafka.sh topics [--port P] NAME[:PARTITIONS] ..."
    if "$PYTHON" -c 'import kafka.admin' 2>/dev/null; then
        "$PYTHON" - "127.0.0.1:$PORT" "$(sasl_user)" "$(sasl_password)" "${ARGS[@]}" <<'PY'
import sys
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
bootstrap, user, password, specs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
login = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
             sasl_plain_username=user, sasl_plain_password=password) if user else {}
admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="coverwatch-topics", **login)
try:
    existing = set(admin.list_topics())
    todo = []
    for spec in specs:
        name, _, parts = spec.partition(":")
        if name in existing:
            print(f"exists  {name}")
            continue
        todo.append(NewTopic(name=name, num_partitions=int(parts or 4), replication_factor=1))
    for t in todo:
        try:
            admin.create_topics([t])
            print(f"created {t.name} ({t.num_partitions} partitions)")
        except TopicAlreadyExistsError:
            print(f"exists  {t.name}")
finally:
    admin.close()
PY
    else
        cmd_fetch
        local spec name parts login=()
        mapfile -t login < <(client_login --command-config)
        for spec in "${ARGS[@]}"; do
            name="${spec%%:*}"; parts=4
            [[ "$spec" == *:* ]] && parts="${spec#*:}"
            java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
                -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="${TMPDIR:-/tmp}" \
                -cp "$LIB_DIR/*" org.apache.kafka.tools.TopicCommand \
                --bootstrap-server "127.0.0.1:$PORT" "${login[@]}" \
                --create --if-not-exists \
                --topic "$name" --partitions "$parts" --replication-factor 1
        done
    fi
}

# ---------------------------------------------------------------- consume
cmd_consume() {
    local port_given=0
    for a in "$@"; do [[ "$a" == --port* ]] && port_given=1; done
    parse_args "$@"
    if (( port_given == 0 )) && [[ -f "$DATA/server.properties" ]] && [[ -n "$(live_pid)" ]]; then
        PORT="$(configured_port)"
    fi
    [[ ${#ARGS[@]} -ge 1 ]] || die "usage: kafka.sh consume [--port P] TOPIC [-- OPTIONS]"
    have_jars || die "no Kafka jars in $LIB_DIR (run: infra/kafka.sh fetch)"
    local login=()
    mapfile -t login < <(client_login --command-config)
    exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="${TMPDIR:-/tmp}" \
        -cp "$LIB_DIR/*" org.apache.kafka.tools.consumer.ConsoleConsumer \
        --bootstrap-server "127.0.0.1:$PORT" "${login[@]}" \
        --topic "${ARGS[0]}" --from-beginning "${ARGS[@]:1}"
}

# ---------------------------------------------------------------- env
cmd_env() {
    parse_args "$@"
    DATA="$(cd "$DATA" 2>/dev/null && pwd || echo "$DATA")"
    local port; port="$(configured_port)"
    [[ -n "$port" ]] || die "no broker configured in $DATA (start it first)"
    echo "export KAFKA_BOOTSTRAP=127.0.0.1:$port"
    if sasl_on; then
        sed -n 's/^\(KAFKA_[A-Z_]*=.*\)$/export \1/p' "$(CREDS)"
    else
        echo "export KAFKA_SECURITY_PROTOCOL=PLAINTEXT"
    fi
}

# ---------------------------------------------------------------- main
ARGS=()
cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
    fetch)  parse_args "$@"; cmd_fetch ;;
    start)  cmd_start "$@" ;;
    stop)   cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    topics) cmd_topics "$@" ;;
    consume) cmd_consume "$@" ;;
    env)    cmd_env "$@" ;;
    -h|--help|help|"") usage ;;
    *) usage; die "unknown command: $cmd" ;;
esac
