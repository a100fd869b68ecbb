#!/usr/bin/env bash
# The local stack without Docker: a real Apache Kafka (KRaft, one node) and a real
# Elasticsearch 9 node on loopback, both fetched from Maven Central (infra/pom.xml).
#
#   infra/stack.sh up|down|status|restart [kafka|elasticsearch]
#   infra/stack.sh stop|start kafka|elasticsearch     (one server; used by fault tests)
#   infra/stack.sh is-up                              (exit 0 when both answer)
#   infra/stack.sh fetch [kafka|elasticsearch]        (download and unpack only)
#   infra/stack.sh purge                              (down, then delete this stack's state)
#   infra/stack.sh kafka TOOL ARGS...                 (Kafka's CLI: topics, console-producer,
#                                                      console-consumer, consumer-groups)
#
# Where things live (docs/stack.md): Kafka's jars, data and logs under $BP_STACK_DIR
# (default .stack/, git-ignored). Elasticsearch's home, config, data and logs in a folder
# of their own outside the clone, named from a hash of the stack folder: as root
# /var/lib/bp-monitor/es-HASH (Elasticsearch refuses root and runs as $BP_ES_USER, which
# must be able to traverse every parent folder), otherwise
# ${XDG_STATE_HOME:-~/.local/state}/bp-monitor/es-HASH; BP_ES_DIR overrides it, and
# .stack/elasticsearch links to it. Downloads land in Maven's local repository
# (BP_MAVEN_REPO, default Maven's own), so they happen once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="$ROOT/infra"
KAFKA_PORT="${BP_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${BP_KAFKA_CONTROLLER_PORT:-9093}"
ES_PORT="${BP_ES_PORT:-9200}"
ES_TRANSPORT_PORT="${BP_ES_TRANSPORT_PORT:-9300}"
ES_USER="${BP_ES_USER:-bpstack}"
KAFKA_HEAP="${BP_KAFKA_HEAP:--Xms256m -Xmx768m}"
ES_HEAP="${BP_ES_HEAP:--Xms512m -Xmx512m}"
START_TIMEOUT="${BP_STACK_TIMEOUT:-120}"
MAVEN_REPO="${BP_MAVEN_REPO:-}"
# Pinned, so Maven never looks a plugin version up online (2.8: the version Maven 3's
# super-POM picks, already in most local repositories).
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:2.8

log() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# Kafka's log.dirs and log4j2.configurationFile are comma-separated lists, and Java's
# class path and log4j mistake a backslash for a separator.
case "${BP_STACK_DIR:-$ROOT/.stack}$ROOT" in
  *,*|*\\*|*$'\n'*) die "Kafka cannot run from a folder whose path holds a comma, a backslash or a newline: ${BP_STACK_DIR:-$ROOT/.stack} (set BP_STACK_DIR elsewhere)" ;;
esac
mkdir -p "${BP_STACK_DIR:-$ROOT/.stack}"
STACK_DIR="$(cd "${BP_STACK_DIR:-$ROOT/.stack}" && pwd -P)"  # physical: one stack, one hash
KAFKA_DIR="$STACK_DIR/kafka"
ES_LINK="$STACK_DIR/elasticsearch"

am_root() { [ "$(id -u)" -eq 0 ]; }

es_default_dir() {
  local id
  id="$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)"
  if am_root; then
    printf '/var/lib/bp-monitor/es-%s\n' "$id"
  else
    [ -n "${XDG_STATE_HOME:-}${HOME:-}" ] || die "neither HOME nor XDG_STATE_HOME is set: set BP_ES_DIR"
    printf '%s/bp-monitor/es-%s\n' "${XDG_STATE_HOME:-$HOME/.local/state}" "$id"
  fi
}
ES_DIR="${BP_ES_DIR:-$(es_default_dir)}"

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

# render TEMPLATE OUT NAME VALUE...: TEMPLATE with every @NAME@ replaced by VALUE, taken
# literally (a path may hold sed's special characters, such as & and :, and spaces).
render() {
  local template="$1" out="$2" names="" assignments=()
  shift 2
  while [ $# -ge 2 ]; do names="$names $1"; assignments+=("BP_RENDER_$1=$2"); shift 2; done
  env "${assignments[@]}" BP_RENDER_NAMES="$names" awk '
    BEGIN { n = split(ENVIRON["BP_RENDER_NAMES"], names, " ") }
    {
      line = $0
      for (i = 1; i <= n; i++) {
        key = "@" names[i] "@"; value = ENVIRON["BP_RENDER_" names[i]]; done = ""
        while ((at = index(line, key)) > 0) {
          done = done substr(line, 1, at - 1) value; line = substr(line, at + length(key))
        }
        line = done line
      }
      print line
    }' "$template" >"$out"
}
yaml_string() { local s="${1//\\/\\\\}"; printf '"%s"' "${s//\"/\\\"}"; }  # a YAML double-quoted scalar
# A Java .properties value: Java reads the file as ISO-8859-1, so backslashes are doubled
# and any character beyond ASCII is written as \uXXXX escapes (its UTF-16 code units).
properties_value() {
  local value="${1//\\/\\\\}"
  if [ -n "$(printf '%s' "$value" | LC_ALL=C tr -d ' -~')" ]; then
    value="$(python3 -c 'import sys
units = sys.argv[1].encode("utf-16-be")
codes = [int.from_bytes(units[i:i + 2], "big") for i in range(0, len(units), 2)]
print("".join(chr(c) if c < 128 else "\\u%04x" % c for c in codes), end="")' "$value")"
  fi
  printf '%s' "$value"
}

mvn_copy() {  # mvn_copy PROFILE OUTDIR
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the servers from Maven Central"
  mvn -q -B -f "$INFRA/pom.xml" -P "$1" ${MAVEN_REPO:+"-Dmaven.repo.local=$MAVEN_REPO"} \
    "$DEPENDENCY_PLUGIN:copy-dependencies" -DoutputDirectory="$2" -DincludeScope=runtime \
    >"$STACK_DIR/mvn-$1.log" 2>&1 \
    || die "could not fetch $1 from Maven Central; see $STACK_DIR/mvn-$1.log"
}

# pids_with_argument ARG...: running processes that have one of these exact arguments
# (the servers are found this way when their pid file is lost).
pids_with_argument() {
  local patterns=() arg
  [ $# -gt 0 ] || return 0
  for arg in "$@"; do patterns+=("--regexp=$arg"); done  # not "-e ARG": grep's own argv would match
  grep -lzFx "${patterns[@]}" /proc/[0-9]*/cmdline 2>/dev/null | sed -n 's:^/proc/\([0-9]*\)/cmdline$:\1:p' || true
}

# ---------------------------------------------------------------- Kafka
# Kafka runs as the caller, from $KAFKA_DIR. Its class path is given relative to the JVM's
# working folder: a ':' in the folder's path would split an absolute one.

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

kafka_run_class() {  # kafka_run_class CLASS ARGS...: a Kafka tool the script uses, logging to a file
  local java
  java="$(kafka_java)"
  (cd "$KAFKA_DIR" && "$java" -Xmx256m -cp 'libs/*' \
    -Dlog4j2.configurationFile="$INFRA/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_DIR/logs/tools" "$@")
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
  local java
  java="$(kafka_java)"
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  render "$INFRA/kafka/server.properties" "$KAFKA_DIR/server.properties" \
    DATA_DIR "$(properties_value "$KAFKA_DIR/data")" PORT "$KAFKA_PORT" CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(kafka_run_class kafka.tools.StorageTool random-uuid)"
    kafka_run_class kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$KAFKA_DIR/server.properties" --standalone >"$KAFKA_DIR/logs/format.log" 2>&1 \
      || die "formatting Kafka storage failed; see $KAFKA_DIR/logs/format.log"
  fi
  : >"$KAFKA_DIR/logs/server.log"
  # setsid: the broker outlives this script and ignores the terminal's signals. The
  # subshell execs into it, so $! is the broker's pid.
  (cd "$KAFKA_DIR" && exec setsid "$java" $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$INFRA/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -cp 'libs/*' kafka.Kafka "$KAFKA_DIR/server.properties") \
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

# Before Elasticsearch's folder moved out of the clone it was .stack/elasticsearch itself:
# a node still running from there is managed where it runs; a stopped one is moved out.
if [ -z "${BP_ES_DIR:-}" ] && [ -d "$ES_LINK" ] && [ ! -L "$ES_LINK" ] && pid_alive "$ES_LINK/es.pid"; then
  ES_DIR="$ES_LINK"
fi
ES_HOME="$ES_DIR/home"

es_adopt_old_layout() {
  [ "$ES_DIR" != "$ES_LINK" ] && [ -d "$ES_LINK" ] && [ ! -L "$ES_LINK" ] || return 0
  log "moving Elasticsearch's data out of the clone: $ES_LINK -> $ES_DIR"
  mkdir -p "$ES_DIR"
  if [ -d "$ES_LINK/data" ] && [ ! -e "$ES_DIR/data" ]; then mv "$ES_LINK/data" "$ES_DIR/data"; fi
  rm -rf "$ES_LINK"
}

es_make_dir() {  # ES's folder, marked as this stack's, and the link to it from the stack folder
  es_adopt_old_layout
  case "$ES_DIR" in
    *:*) die "Elasticsearch cannot run from a folder whose path holds a ':' (its class path separator): $ES_DIR; set BP_ES_DIR" ;;
  esac
  mkdir -p "$ES_DIR"
  # ES's user must traverse the shared parent, whatever root's umask.
  if am_root && [ -z "${BP_ES_DIR:-}" ]; then chmod 755 "$(dirname "$ES_DIR")"; fi
  printf '%s\n' "$STACK_DIR" >"$ES_DIR/.bp-stack"
  [ "$ES_DIR" = "$ES_LINK" ] || ln -sfn "$ES_DIR" "$ES_LINK"
}

es_installed() { [ -f "$ES_HOME/.version-$ES_VERSION" ]; }

es_install() {
  es_make_dir
  es_installed && return 0
  log "fetching Elasticsearch $ES_VERSION from Maven Central (once) into $ES_DIR"
  command -v unzip >/dev/null || die "unzip is needed to unpack Elasticsearch (apt-get install unzip)"
  local zipdir="$STACK_DIR/downloads/elasticsearch"
  rm -rf "$zipdir" "$ES_HOME"
  mkdir -p "$zipdir"
  mvn_copy elasticsearch "$zipdir"
  local unpack="$ES_DIR/unpack"
  rm -rf "$unpack"; mkdir -p "$unpack"
  unzip -q "$zipdir/elasticsearch-$ES_VERSION.zip" -d "$unpack"
  mv "$unpack/elasticsearch-$ES_VERSION" "$ES_HOME"
  rm -rf "$unpack" "$zipdir"
  touch "$ES_HOME/.version-$ES_VERSION"
}

es_as_owner() {  # ES refuses root, so root delegates to $ES_USER
  if am_root; then runuser -u "$ES_USER" -- "$@"; else "$@"; fi
}

es_prepare_user() {
  am_root || return 0
  if ! id -u "$ES_USER" >/dev/null 2>&1; then
    log "creating unprivileged user $ES_USER for Elasticsearch (it refuses to run as root)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER" \
      || die "could not create user $ES_USER"
  fi
  chown -R "$ES_USER" "$ES_DIR"
  runuser -u "$ES_USER" -- test -r "$ES_HOME/bin/elasticsearch" \
    || die "user $ES_USER cannot read $ES_HOME: every parent folder must be traversable (chmod o+x), or set BP_ES_DIR to a folder it can reach"
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
  render "$INFRA/elasticsearch/elasticsearch.yml" "$ES_HOME/config/elasticsearch.yml" \
    DATA_DIR "$(yaml_string "$ES_DIR/data")" LOGS_DIR "$(yaml_string "$ES_DIR/logs")" \
    PORT "$ES_PORT" TRANSPORT_PORT "$ES_TRANSPORT_PORT"
  rm -f "$ES_DIR/es.pid"
  es_prepare_user
  : >"$ES_DIR/logs/stdout.log"
  es_as_owner env ES_JAVA_HOME="$(dirname "$(dirname "$java")")" ES_JAVA_OPTS="$ES_HEAP" \
    "$ES_HOME/bin/elasticsearch" -d -p "$ES_DIR/es.pid" \
    >>"$ES_DIR/logs/stdout.log" 2>&1 </dev/null \
    || die "Elasticsearch failed to start; see $ES_DIR/logs/stdout.log and $ES_DIR/logs/bp-monitor-local.log"
  started+=(es)
  log "Elasticsearch $ES_VERSION starting on 127.0.0.1:$ES_PORT (pid $(cat "$ES_DIR/es.pid" 2>/dev/null || echo '?'), folder $ES_DIR)"
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

stop_process() {  # stop_process NAME PID: TERM, wait up to 30 s, then KILL
  local name="$1" pid="$2"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  log "$name stopped"
}

# stop_server NAME PIDFILE PORT ARGUMENT...: the server of the pid file, then any process
# still running with one of the server's own arguments (a pid file lost or overwritten).
stop_server() {
  local name="$1" pidfile="$2" port="$3" pid
  shift 3
  if pid_alive "$pidfile"; then stop_process "$name" "$(cat "$pidfile")"; fi
  rm -f "$pidfile"
  for pid in $(pids_with_argument "$@"); do
    log "$name: stopping pid $pid, started for this stack but not in $pidfile"
    stop_process "$name" "$pid"
  done
  if port_open "$port"; then log "warning: port $port answers but no $name process of this stack is running"; fi
  return 0
}

kafka_stop() { stop_server Kafka "$KAFKA_DIR/kafka.pid" "$KAFKA_PORT" "-Dkafka.logs.dir=$KAFKA_DIR/logs"; }
es_stop() {
  stop_server Elasticsearch "$ES_DIR/es.pid" "$ES_PORT" "-Des.path.home=$ES_HOME" "-Des.path.home=$ES_LINK/home"
}

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
    echo "elasticsearch  down  (http://127.0.0.1:$ES_PORT)  folder $ES_DIR"; rc=1
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
  local java libs
  java="$(kafka_java)"
  # The tool runs in the caller's folder (file arguments stay relative to it), with the
  # jars' folder given relative to it, unless that relative path still holds a ':'.
  libs="$(realpath --relative-to=. "$KAFKA_DIR/libs")"
  case "$libs" in *:*) cd "$KAFKA_DIR"; libs=libs ;; esac
  exec "$java" -Xmx256m -cp "$libs/*" \
    -Dlog4j2.configurationFile="$INFRA/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_DIR/logs/tools" "$class" "$@"
}

purge() {  # everything this stack keeps: its folder's known entries and ES's folder
  "$0" down
  local dir
  for dir in "$ES_DIR" "$(es_default_dir)"; do
    if [ "$(cat "$dir/.bp-stack" 2>/dev/null)" = "$STACK_DIR" ]; then
      rm -rf "$dir"; log "removed $dir"
    fi
  done
  rm -rf "$KAFKA_DIR" "$ES_LINK" "$STACK_DIR/downloads" "$STACK_DIR"/mvn-*.log
  rmdir "$STACK_DIR" 2>/dev/null || true
  log "removed this stack's state under $STACK_DIR"
}

# ---------------------------------------------------------------- main

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
      stop_server "demo consumer" "$STACK_DIR/demo-consumer.pid" "${BP_DEMO_METRICS_PORT:-9108}"
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
  purge) purge ;;
  *) die "usage: infra/stack.sh up|down|status|restart|is-up|fetch|purge [kafka|elasticsearch] | kafka TOOL ARGS..." ;;
esac
