#!/usr/bin/env bash
# The local stack without Docker: a real Apache Kafka (KRaft, one node) and a real
# Elasticsearch 9 node on loopback, both fetched from Maven Central (infra/pom.xml).
#
#   infra/stack.sh up|down|status|restart [kafka|elasticsearch]
#   infra/stack.sh stop|start kafka|elasticsearch     (one server; used by fault tests)
#   infra/stack.sh is-up                              (exit 0 when both answer)
#   infra/stack.sh kafka TOOL ARGS...                 (Kafka's CLI: topics, console-producer,
#                                                      console-consumer, consumer-groups)
#
# State (binaries, data, logs, pid files) lives under $BP_STACK_DIR (default .stack/,
# git-ignored). Downloads land in Maven's local repository, so they happen once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="$ROOT/infra"
STACK_DIR="${BP_STACK_DIR:-$ROOT/.stack}"
KAFKA_PORT="${BP_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${BP_KAFKA_CONTROLLER_PORT:-9093}"
ES_PORT="${BP_ES_PORT:-9200}"
ES_TRANSPORT_PORT="${BP_ES_TRANSPORT_PORT:-9300}"
ES_USER="${BP_ES_USER:-bpstack}"
KAFKA_HEAP="${BP_KAFKA_HEAP:--Xms256m -Xmx768m}"
ES_HEAP="${BP_ES_HEAP:--Xms512m -Xmx512m}"
START_TIMEOUT="${BP_STACK_TIMEOUT:-120}"

KAFKA_DIR="$STACK_DIR/kafka"
ES_DIR="$STACK_DIR/elasticsearch"
ES_HOME="$ES_DIR/home"

log() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

prop() {  # prop NAME: a property of infra/pom.xml
  sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$INFRA/pom.xml" | head -1
}
KAFKA_VERSION="$(prop kafka.version)"
ES_VERSION="$(prop elasticsearch.version)"

# find_jdk MIN [MAX]: the java binary of an installed JDK whose major version is in
# [MIN, MAX], preferring the lowest; searches JAVA_HOME, Debian's JVM directory and PATH.
find_jdk() {
  local min="$1" max="${2:-999}" best="" best_major=1000 candidate major
  for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} /usr/lib/jvm/*/bin/java "$(command -v java || true)"; do
    [ -x "$candidate" ] || continue
    major="$("$candidate" -XshowSettings:properties -version 2>&1 \
      | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p' | head -1)"
    [ -n "$major" ] || continue
    if [ "$major" -ge "$min" ] && [ "$major" -le "$max" ] && [ "$major" -lt "$best_major" ]; then
      best="$candidate"; best_major="$major"
    fi
  done
  [ -n "$best" ] || return 1
  printf '%s\n' "$best"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() {  # pid_alive PIDFILE
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

mvn_copy() {  # mvn_copy PROFILE OUTDIR
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the servers from Maven Central"
  mvn -q -B -f "$INFRA/pom.xml" -P "$1" dependency:copy-dependencies \
    -DoutputDirectory="$2" -DincludeScope=runtime >"$STACK_DIR/mvn-$1.log" 2>&1 \
    || die "could not fetch $1 from Maven Central; see $STACK_DIR/mvn-$1.log"
}

# ---------------------------------------------------------------- Kafka

kafka_installed() { [ -f "$KAFKA_DIR/libs/kafka_2.13-$KAFKA_VERSION.jar" ]; }

kafka_install() {
  kafka_installed && return 0
  log "fetching Kafka $KAFKA_VERSION from Maven Central (once)"
  rm -rf "$KAFKA_DIR/libs"
  mkdir -p "$KAFKA_DIR/libs"
  mvn_copy kafka "$KAFKA_DIR/libs"
}

kafka_java() {
  find_jdk 17 25 || die "Kafka needs a JDK 17+ (looked in JAVA_HOME, /usr/lib/jvm and PATH)"
}

kafka_run_class() {  # kafka_run_class CLASS ARGS...: a Kafka tool, logging to a file
  "$(kafka_java)" -Xmx256m -cp "$KAFKA_DIR/libs/*" \
    -Dlog4j2.configurationFile="$INFRA/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_DIR/logs/tools" "$@"
}

kafka_ready() {
  port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KAFKA_DIR/logs/server.log" 2>/dev/null
}

kafka_start() {
  if pid_alive "$KAFKA_DIR/kafka.pid"; then
    log "Kafka already running (pid $(cat "$KAFKA_DIR/kafka.pid"))"; return 0
  fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; stop it or set BP_KAFKA_PORT"
  kafka_install
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  sed -e "s:@DATA_DIR@:$KAFKA_DIR/data:" -e "s:@PORT@:$KAFKA_PORT:g" \
      -e "s:@CONTROLLER_PORT@:$KAFKA_CONTROLLER_PORT:g" \
      "$INFRA/kafka/server.properties" >"$KAFKA_DIR/server.properties"
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(kafka_run_class kafka.tools.StorageTool random-uuid)"
    kafka_run_class kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$KAFKA_DIR/server.properties" --standalone >"$KAFKA_DIR/logs/format.log" 2>&1 \
      || die "formatting Kafka storage failed; see $KAFKA_DIR/logs/format.log"
  fi
  : >"$KAFKA_DIR/logs/server.log"
  # setsid: the broker outlives this script and ignores the terminal's signals.
  setsid "$(kafka_java)" $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$INFRA/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -cp "$KAFKA_DIR/libs/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >"$KAFKA_DIR/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$KAFKA_DIR/kafka.pid"
  started+=(kafka)
  log "Kafka $KAFKA_VERSION starting on 127.0.0.1:$KAFKA_PORT (pid $!)"
}

kafka_wait() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until kafka_ready; do
    pid_alive "$KAFKA_DIR/kafka.pid" || die "Kafka exited during start-up; see $KAFKA_DIR/logs/server.log and $KAFKA_DIR/logs/stdout.log"
    [ "$SECONDS" -lt "$deadline" ] || die "Kafka not ready after ${START_TIMEOUT}s; see $KAFKA_DIR/logs/server.log"
    sleep 0.5
  done
  log "Kafka ready on 127.0.0.1:$KAFKA_PORT"
}

# ---------------------------------------------------------------- Elasticsearch

es_installed() { [ -f "$ES_HOME/.version-$ES_VERSION" ]; }

es_owner() {  # the account ES runs as: ES refuses root, so root delegates to $ES_USER
  if [ "$(id -u)" -eq 0 ]; then echo "$ES_USER"; else id -un; fi
}

es_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$ES_USER" -- "$@"; else "$@"; fi
}

es_install() {
  es_installed && return 0
  log "fetching Elasticsearch $ES_VERSION from Maven Central (once)"
  command -v unzip >/dev/null || die "unzip is needed to unpack Elasticsearch (apt-get install unzip)"
  local zipdir="$STACK_DIR/downloads/elasticsearch"
  rm -rf "$zipdir" "$ES_HOME"
  mkdir -p "$zipdir" "$ES_DIR"
  mvn_copy elasticsearch "$zipdir"
  local unpack="$ES_DIR/unpack"
  rm -rf "$unpack"; mkdir -p "$unpack"
  unzip -q "$zipdir/elasticsearch-$ES_VERSION.zip" -d "$unpack"
  mv "$unpack/elasticsearch-$ES_VERSION" "$ES_HOME"
  rm -rf "$unpack" "$zipdir"
  touch "$ES_HOME/.version-$ES_VERSION"
}

es_prepare_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  if ! id -u "$ES_USER" >/dev/null 2>&1; then
    log "creating unprivileged user $ES_USER for Elasticsearch (it refuses to run as root)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER" \
      || die "could not create user $ES_USER"
  fi
  chown -R "$ES_USER" "$ES_DIR"
  runuser -u "$ES_USER" -- test -r "$ES_HOME/bin/elasticsearch" \
    || die "user $ES_USER cannot read $ES_HOME: every parent folder must be traversable (chmod o+x)"
}

es_ready() {
  curl -fsS -m 2 "http://127.0.0.1:$ES_PORT/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1
}

es_start() {
  if pid_alive "$ES_DIR/es.pid"; then
    log "Elasticsearch already running (pid $(cat "$ES_DIR/es.pid"))"; return 0
  fi
  port_open "$ES_PORT" && die "port $ES_PORT is taken by another process; stop it or set BP_ES_PORT"
  es_install
  local java
  java="$(find_jdk 21)" || die "Elasticsearch 9 needs a JDK 21+ (e.g. Temurin 25 in /usr/lib/jvm)"
  mkdir -p "$ES_DIR/data" "$ES_DIR/logs"
  sed -e "s:@DATA_DIR@:$ES_DIR/data:" -e "s:@LOGS_DIR@:$ES_DIR/logs:" \
      -e "s:@PORT@:$ES_PORT:" -e "s:@TRANSPORT_PORT@:$ES_TRANSPORT_PORT:" \
      "$INFRA/elasticsearch/elasticsearch.yml" >"$ES_HOME/config/elasticsearch.yml"
  rm -f "$ES_DIR/es.pid"
  es_prepare_user
  : >"$ES_DIR/logs/stdout.log"
  es_as_owner env ES_JAVA_HOME="$(dirname "$(dirname "$java")")" ES_JAVA_OPTS="$ES_HEAP" \
    "$ES_HOME/bin/elasticsearch" -d -p "$ES_DIR/es.pid" \
    >>"$ES_DIR/logs/stdout.log" 2>&1 </dev/null \
    || die "Elasticsearch failed to start; see $ES_DIR/logs/stdout.log and $ES_DIR/logs/bp-monitor-local.log"
  started+=(es)
  log "Elasticsearch $ES_VERSION starting on 127.0.0.1:$ES_PORT (pid $(cat "$ES_DIR/es.pid" 2>/dev/null || echo '?'))"
}

es_wait() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until es_ready; do
    [ -s "$ES_DIR/es.pid" ] && ! pid_alive "$ES_DIR/es.pid" \
      && die "Elasticsearch exited during start-up; see $ES_DIR/logs/bp-monitor-local.log"
    [ "$SECONDS" -lt "$deadline" ] || die "Elasticsearch not ready after ${START_TIMEOUT}s; see $ES_DIR/logs/bp-monitor-local.log"
    sleep 0.5
  done
  log "Elasticsearch ready on http://127.0.0.1:$ES_PORT"
}

# ---------------------------------------------------------------- stop

stop_pid() {  # stop_pid NAME PIDFILE PORT: TERM, wait up to 30 s, then KILL
  local name="$1" pidfile="$2" port="$3" pid
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    port_open "$port" && log "warning: port $port answers but no $name pid is known to this stack"
    return 0
  fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
  log "$name stopped"
}

kafka_stop() { stop_pid Kafka "$KAFKA_DIR/kafka.pid" "$KAFKA_PORT"; }
es_stop() { stop_pid Elasticsearch "$ES_DIR/es.pid" "$ES_PORT"; }

# ---------------------------------------------------------------- status

status() {
  local rc=0
  if pid_alive "$KAFKA_DIR/kafka.pid" && kafka_ready; then
    echo "kafka          up    127.0.0.1:$KAFKA_PORT  pid $(cat "$KAFKA_DIR/kafka.pid")  logs $KAFKA_DIR/logs/server.log"
  else
    echo "kafka          down  (127.0.0.1:$KAFKA_PORT)"; rc=1
  fi
  if pid_alive "$ES_DIR/es.pid" && es_ready; then
    local health
    health="$(curl -fsS -m 2 "http://127.0.0.1:$ES_PORT/_cluster/health" | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')"
    echo "elasticsearch  up    http://127.0.0.1:$ES_PORT  pid $(cat "$ES_DIR/es.pid")  health $health  logs $ES_DIR/logs/"
  else
    echo "elasticsearch  down  (http://127.0.0.1:$ES_PORT)"; rc=1
  fi
  return $rc
}

kafka_cli() {  # kafka_cli TOOL ARGS...: Kafka's own command-line tools, from the stack's jars
  local tool="${1:-}"; shift || true
  local class
  case "$tool" in
    topics) class=org.apache.kafka.tools.TopicCommand ;;
    console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
    console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    *) die "usage: infra/stack.sh kafka topics|console-producer|console-consumer|consumer-groups ARGS..." ;;
  esac
  kafka_installed || kafka_install
  mkdir -p "$KAFKA_DIR/logs/tools"
  exec "$(kafka_java)" -Xmx256m -cp "$KAFKA_DIR/libs/*" \
    -Dlog4j2.configurationFile="$INFRA/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_DIR/logs/tools" "$class" "$@"
}

# ---------------------------------------------------------------- main

mkdir -p "$STACK_DIR"
cmd="${1:-}"
if [ "$cmd" = kafka ]; then shift; kafka_cli "$@"; fi
what="${2:-all}"
case "$what" in all|kafka|elasticsearch) ;; *) die "unknown server '$what' (kafka, elasticsearch)";; esac
want() { [ "$what" = all ] || [ "$what" = "$1" ]; }

case "$cmd" in
  up|start)
    # If one fails to start, stop what this call started: nothing is left half up.
    started=()
    trap 'rc=$?; if [ $rc -ne 0 ]; then for server in "${started[@]}"; do "${server}_stop"; done; fi' EXIT
    # Start both before waiting on either: their JVMs boot in parallel.
    if want kafka; then kafka_start; fi
    if want elasticsearch; then es_start; fi
    if want kafka; then kafka_wait; fi
    if want elasticsearch; then es_wait; fi
    ;;
  down|stop)
    if [ "$what" = all ]; then  # the consumer `make demo` leaves running commits before Kafka goes
      stop_pid "demo consumer" "$STACK_DIR/demo-consumer.pid" "${BP_DEMO_METRICS_PORT:-9108}"
    fi
    if want kafka; then kafka_stop; fi
    if want elasticsearch; then es_stop; fi
    ;;
  restart)
    "$0" down "$what"; "$0" up "$what" ;;
  status) status ;;
  is-up) status >/dev/null ;;
  fetch)  # download only (used to warm caches)
    if want kafka; then kafka_install; fi
    if want elasticsearch; then es_install; fi
    ;;
  *) die "usage: infra/stack.sh up|down|status|restart|is-up|fetch [kafka|elasticsearch] | kafka TOOL ARGS..." ;;
esac
