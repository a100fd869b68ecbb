#!/usr/bin/env bash
# make demo: from a fresh clone to a running, explained system, without Docker.
#
#   infra/demo.sh [--drift]        (make demo, make demo DEMO_DRIFT=1)
#
#   1. starts the local stack (Kafka + Elasticsearch) when it is down; leaves it up
#   2. bp setup (topics + index template)
#   3. the Airflow DAGs bp_generate_data -> bp_train_model (a new challenger), as real
#      `airflow dags test` runs; with no champion yet, bp_promote_model judges it now
#      against the rules alone (there is nothing to shadow)
#   4. starts the consumer in the background (or reuses the one an earlier demo started)
#      and waits until it serves the champion and scores the challenger in shadow
#   5. streams readings with `bp produce` (simulated times ending now), plus a few
#      malformed messages (for the DLQ)
#   6. waits until the consumer group has committed the topic's end offsets
#   7. with a champion in place: waits until the consumer's shadow evidence about the
#      challenger is in MLflow, then bp_promote_model (hold-out + that live evidence)
#   8. --drift: the stream switches to the cuff-offset world (Variable bp_scenario),
#      `bp drift` names the offset fleet, then bp_monitor_drift -> bp_train_model on
#      fresh data from that world -> more live readings for its shadow evidence ->
#      bp_promote_model, and the consumer serves whatever the gate decided
#   9. prints a summary (infra/demo.py) and how to open the UIs and stop everything
#
# One status line per step on the terminal; each step's output goes to a log file under
# $AIRFLOW_HOME/logs-demo/. Any failure: exit 1 with a one-line reason and the log path.
#
# Settings: the usual BP_* / MLFLOW_TRACKING_URI variables (README), plus
#   BP_DEMO_HOME          where the demo keeps its state (default: Airflow home .airflow-demo,
#                         consumer pid/log in ${BP_STACK_DIR:-.stack}/); with it: $BP_DEMO_HOME/airflow and
#                         $BP_DEMO_HOME/demo-consumer.{pid,log}
#   BP_DEMO_METRICS_PORT  the consumer's Prometheus port (9108)
#   BP_DEMO_COUNT         readings to stream (5000: the gate's BP_GATE_MIN_SHADOW_READINGS default,
#                         so the second run's challenger gathers enough live evidence)
#   BP_DEMO_STREAM_PATIENTS  patients of the stream (200)
#   BP_DEMO_PATIENTS / BP_DEMO_READINGS   training data set size (300 / 30000)
#   BP_DEMO_HOLDOUT       promotion hold-out size (20000)
#   BP_DEMO_WAIT          seconds to wait for the consumer to catch up (120)
#   BP_DEMO_DRIFT=1       same as --drift
#   BP_DEMO_DRIFT_DETECT  --drift: cuff-offset readings streamed before the drift check (2000)
#   BP_DEMO_DRIFT_COUNT   --drift: cuff-offset readings streamed after retraining (BP_DEMO_COUNT)
set -uo pipefail

usage() { printf 'usage: infra/demo.sh [--drift]\n'; }
DRIFT=""
for arg in "$@"; do
  case "$arg" in
    --drift) DRIFT=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; printf '[demo] error: unknown argument %s\n' "$arg" >&2; exit 2 ;;
  esac
done
case "${BP_DEMO_DRIFT:-}" in 1|yes|true) DRIFT=1 ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
PY="$BIN/python"

say() { printf '[demo] %s\n' "$*"; }
fail() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$ROOT" "$1" ;; esac; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[ -x "$PY" ] && [ -x "$BIN/bp" ] && [ -x "$BIN/airflow" ] || fail "no .venv with bp and airflow: run make install"

if [ -n "${BP_DEMO_HOME:-}" ]; then
  DEMO_HOME="$(abspath "$BP_DEMO_HOME")"
  AF_HOME="$DEMO_HOME/airflow"
  RUN_DIR="$DEMO_HOME"
else
  AF_HOME="$ROOT/.airflow-demo"
  RUN_DIR="${BP_STACK_DIR:-$ROOT/.stack}"
fi
LOGS="$AF_HOME/logs-demo"
PID_FILE="$RUN_DIR/demo-consumer.pid"
CONSUMER_LOG="$RUN_DIR/demo-consumer.log"
CONSUMER_CONF="$RUN_DIR/demo-consumer.conf"
METRICS_PORT="${BP_DEMO_METRICS_PORT:-9108}"
COUNT="${BP_DEMO_COUNT:-5000}"
STREAM_PATIENTS="${BP_DEMO_STREAM_PATIENTS:-200}"
DRIFT_DETECT="${BP_DEMO_DRIFT_DETECT:-2000}"
DRIFT_COUNT="${BP_DEMO_DRIFT_COUNT:-$COUNT}"
PATIENTS="${BP_DEMO_PATIENTS:-300}"
READINGS="${BP_DEMO_READINGS:-30000}"
HOLDOUT="${BP_DEMO_HOLDOUT:-20000}"
WAIT_TIMEOUT="${BP_DEMO_WAIT:-120}"
TODAY="$(date -u +%F)"

# One data folder and one MLflow store for every process of the demo (absolute paths:
# Airflow, the consumer and the summary must agree whatever their working directory).
export BP_DATA_DIR="$(abspath "${BP_DATA_DIR:-data}")"
[ -n "${BP_ARCHIVE_DIR:-}" ] && export BP_ARCHIVE_DIR="$(abspath "$BP_ARCHIVE_DIR")"
if [ -z "${MLFLOW_TRACKING_URI:-}" ]; then
  export MLFLOW_TRACKING_URI="sqlite:///$BP_DATA_DIR/mlflow/mlflow.db"
fi
mkdir -p "$LOGS" "$RUN_DIR" "$BP_DATA_DIR/mlflow" || fail "cannot create $LOGS, $RUN_DIR or $BP_DATA_DIR"

# step LABEL LOG CMD...: run CMD with its output in LOG; one status line, or fail with
# the log's last line (the command's own one-line error) and the log path.
step() {
  local label="$1" log="$2" t0 rc
  shift 2
  t0="$(now)"
  "$@" >"$log" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "$label failed (exit $rc): $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-200); see $log"
  fi
  printf '[demo] %-44s ok %6s s\n' "$label" "$(since "$t0")"
}

airflow_cmd() {
  env AIRFLOW_HOME="$AF_HOME" \
      AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags" \
      AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins" \
      AIRFLOW__CORE__LOAD_EXAMPLES=False \
      PATH="$BIN:$PATH" \
      "$BIN/airflow" "$@"
}

# dag_run LABEL DAG_ID CONF [LOGICAL_DATE [LOG]]: one real DAG run (logical date: today);
# `dags test` exits 0 even when a task failed, so the run's final state is checked in its output.
dag_run() {
  local label="$1" dag="$2" conf="$3" when="${4:-$TODAY}" log="${5:-$LOGS/$2.log}"
  step "$label" "$log" airflow_cmd dags test "$dag" "$when" -c "$conf"
  if ! grep -q "state=success" "$log" || grep -q "state=failed" "$log"; then
    fail "$dag did not succeed: $(grep -E 'ERROR|Error' "$log" | tail -1 | cut -c1-200); see $log"
  fi
}

# models: sets CHAMPION and CHALLENGER ('-' for none) from the registry.
models() {
  local out
  out="$("$PY" "$ROOT/infra/demo.py" models 2>"$LOGS/models.log")" \
    || fail "cannot read the model aliases from MLflow: $(tail -1 "$LOGS/models.log"); see $LOGS/models.log"
  read -r CHAMPION CHALLENGER <<<"$out"
}
v() { [ "$1" = "-" ] && printf 'the rules' || printf 'v%s' "$1"; }

# ready: wait until the consumer serves $CHAMPION and shadow-scores $CHALLENGER.
ready() {
  local what="serves $(v "$CHAMPION")"
  [ "$CHALLENGER" != "-" ] && [ "$CHALLENGER" != "$CHAMPION" ] && what="$what, shadows v$CHALLENGER"
  step "consumer $what" "$LOGS/ready.log" "$PY" "$ROOT/infra/demo.py" ready --port "$METRICS_PORT" \
    --log "$CONSUMER_LOG" --champion "$CHAMPION" --challenger "$CHALLENGER"
}

# stream LABEL LOG ARGS...: bp produce for the demo's patients (readings ending now).
stream() {
  local label="$1" log="$2"
  shift 2
  step "$label" "$log" "$BIN/bp" produce --patients "$STREAM_PATIENTS" "$@"
}
wait_committed() {
  step "wait for the consumer to commit everything" "$LOGS/wait.log" \
    "$PY" "$ROOT/infra/demo.py" wait --timeout "$WAIT_TIMEOUT" --consumer-pid "$CONSUMER_PID" --consumer-log "$CONSUMER_LOG"
}

# promote_with_evidence [LOGICAL_DATE LOG]: the gate, once the consumer's shadow evidence
# about $CHALLENGER beside $CHAMPION is in MLflow (the consumer publishes it every 30 s);
# then wait until the consumer serves what the gate decided.
promote_with_evidence() {
  step "shadow evidence of v$CHALLENGER in MLflow" "$LOGS/evidence.log" "$PY" "$ROOT/infra/demo.py" evidence \
    --port "$METRICS_PORT" --challenger "$CHALLENGER" --champion "$CHAMPION"
  dag_run "bp_promote_model (v$CHALLENGER vs v$CHAMPION, $(tail -1 "$LOGS/evidence.log") live)" bp_promote_model \
    "{\"holdout_readings\": $HOLDOUT}" "$@"
  models
  ready
}

T_START="$(now)"
say "bp-monitor demo ($TODAY): topic ${BP_TOPIC:-blood-pressure}, index ${BP_ES_INDEX:-bp-anomalies}, data $BP_DATA_DIR"
say "logs: $LOGS/"

conf_now="topic=${BP_TOPIC:-blood-pressure} group=${BP_CONSUMER_GROUP:-bp-consumer} index=${BP_ES_INDEX:-bp-anomalies} data=$BP_DATA_DIR archive=${BP_ARCHIVE_DIR:-} mlflow=$MLFLOW_TRACKING_URI kafka=${BP_KAFKA_BOOTSTRAP:-} es=${BP_ES_URL:-} port=$METRICS_PORT"
consumer_alive() {
  [ -s "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$(cat "$PID_FILE")/cmdline" 2>/dev/null | grep -q "consume"
}
# Fail fast (before the slow steps) when the metrics port is taken by something else.
if ! consumer_alive && port_open "$METRICS_PORT"; then
  fail "port $METRICS_PORT is taken by another process; free it or set BP_DEMO_METRICS_PORT"
fi

# ---------------------------------------------------------------- 1. the stack
if "$PY" "$ROOT/infra/demo.py" services >"$LOGS/services.log" 2>&1; then
  say "stack: Kafka and Elasticsearch already up (left as they are)"
else
  step "start the local stack (infra/stack.sh up)" "$LOGS/stack.log" "$ROOT/infra/stack.sh" up
  "$PY" "$ROOT/infra/demo.py" services >"$LOGS/services.log" 2>&1 \
    || fail "$(tail -1 "$LOGS/services.log") after infra/stack.sh up (check BP_KAFKA_BOOTSTRAP / BP_ES_URL)"
fi

# ---------------------------------------------------------------- 2. topics + template
step "bp setup (topics, index template)" "$LOGS/setup.log" "$BIN/bp" setup

# ---------------------------------------------------------------- 3. the DAG chain
MIGRATED_STAMP="$AF_HOME/.demo-migrated"
SCENARIO_STAMP="$AF_HOME/.demo-scenario"  # the world an earlier --drift left the Variable bp_scenario in
want_stamp="$(cat requirements.lock 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ -f "$AF_HOME/airflow.db" ] && [ -f "$MIGRATED_STAMP" ] && [ "$(cat "$MIGRATED_STAMP")" = "$want_stamp" ]; then
  say "airflow db: already migrated ($AF_HOME)"
else
  step "airflow db migrate ($AF_HOME)" "$LOGS/db-migrate.log" airflow_cmd db migrate
  echo "$want_stamp" >"$MIGRATED_STAMP"
fi
if [ -f "$SCENARIO_STAMP" ] && [ "$(cat "$SCENARIO_STAMP")" != baseline ]; then
  step "airflow variables set bp_scenario baseline" "$LOGS/variables.log" airflow_cmd variables set bp_scenario baseline
  echo baseline >"$SCENARIO_STAMP"
fi
dag_run "bp_generate_data ($PATIENTS patients, $READINGS readings)" bp_generate_data \
  "{\"patients\": $PATIENTS, \"readings\": $READINGS, \"scenario\": \"baseline\"}"
# JSON built by Python: the data folder's path may hold quotes or backslashes.
json_conf() { "$PY" -c 'import json, sys; print(json.dumps({sys.argv[1]: sys.argv[2]}))' "$@"; }
dag_run "bp_train_model" bp_train_model "$(json_conf data_path "$BP_DATA_DIR/training/$TODAY")"
models
[ "$CHALLENGER" != "-" ] || fail "bp_train_model left no 'challenger' alias; see $LOGS/bp_train_model.log"
DEMO_CHALLENGER="$CHALLENGER"
SHADOWED=""
if [ "$CHAMPION" = "-" ]; then
  # No champion: the rules are the champion of last resort, and there is nothing to shadow.
  dag_run "bp_promote_model (v$CHALLENGER vs the rules alone)" bp_promote_model "{\"holdout_readings\": $HOLDOUT}"
  models
else
  SHADOWED=1  # judged after the stream, on the live evidence the consumer gathers
fi

# ---------------------------------------------------------------- 4. the consumer
REUSED=""
if consumer_alive; then
  CONSUMER_PID="$(cat "$PID_FILE")"
  [ "$(cat "$CONSUMER_CONF" 2>/dev/null)" = "$conf_now" ] \
    || fail "the demo consumer (pid $CONSUMER_PID) runs with other settings ($(cat "$CONSUMER_CONF" 2>/dev/null)); stop it: kill $CONSUMER_PID"
  REUSED="--consumer-reused"
  say "consumer: reusing the one already running (pid $CONSUMER_PID, log $CONSUMER_LOG)"
else
  port_open "$METRICS_PORT" && fail "port $METRICS_PORT is taken by another process; free it or set BP_DEMO_METRICS_PORT"
  t0="$(now)"
  log_from=$(( $(stat -c %s "$CONSUMER_LOG" 2>/dev/null || echo 0) + 1 ))
  # setsid: the consumer outlives this script and ignores the terminal's Ctrl-C.
  setsid "$BIN/bp" consume --metrics-port "$METRICS_PORT" --model-refresh 5 >>"$CONSUMER_LOG" 2>&1 </dev/null &
  CONSUMER_PID=$!
  echo "$CONSUMER_PID" >"$PID_FILE"
  echo "$conf_now" >"$CONSUMER_CONF"
  deadline=$((SECONDS + 90))
  until tail -c +"$log_from" "$CONSUMER_LOG" | grep -q "assigned partitions"; do
    kill -0 "$CONSUMER_PID" 2>/dev/null \
      || fail "the consumer exited at start-up: $(tail -1 "$CONSUMER_LOG" | cut -c1-200); see $CONSUMER_LOG"
    [ "$SECONDS" -lt "$deadline" ] || fail "the consumer did not join its group within 90 s; see $CONSUMER_LOG"
    sleep 0.5
  done
  printf '[demo] %-44s ok %6s s\n' "start the consumer (pid $CONSUMER_PID, :$METRICS_PORT)" "$(since "$t0")"
fi
ready
step "scrape the consumer's metrics" "$LOGS/scrape.log" \
  "$PY" "$ROOT/infra/demo.py" scrape --port "$METRICS_PORT" --out "$LOGS/metrics-before.json"

# ---------------------------------------------------------------- 5. stream
T_STREAM="$(now)"
PRODUCED="$COUNT"
stream "bp produce --count $COUNT (as fast as possible)" "$LOGS/produce.log" --count "$COUNT"
step "send malformed messages (for the DLQ)" "$LOGS/malformed.log" "$PY" "$ROOT/infra/demo.py" malformed
MALFORMED="$(tail -1 "$LOGS/malformed.log")"

# ---------------------------------------------------------------- 6. wait
wait_committed
E2E="$(since "$T_STREAM")"

# ---------------------------------------------------------------- 7. the gate, on live evidence
[ -n "$SHADOWED" ] && promote_with_evidence

# ---------------------------------------------------------------- 8. --drift: the loop
DRIFT_ARGS=()
if [ -n "$DRIFT" ]; then
  T_DRIFT="$(now)"
  say "--drift: the cuff-offset world (the HomeCheck Pro fleet reads +15/+8 mmHg high)"
  step "airflow variables set bp_scenario cuff-offset" "$LOGS/variables.log" airflow_cmd variables set bp_scenario cuff-offset
  echo cuff-offset >"$SCENARIO_STAMP"
  # The window of the drift checks starts here: the consumer committed the baseline stream
  # before the Variable was set (seconds ago), and the cuff-offset readings come after.
  SWITCH_EPOCH="$(date +%s)"
  SWITCHED_AT="$(date -u -d "@$SWITCH_EPOCH" +%FT%TZ)"
  stream "bp produce --scenario cuff-offset --count $DRIFT_DETECT" "$LOGS/produce-drift.log" \
    --scenario cuff-offset --count "$DRIFT_DETECT"
  PRODUCED=$((PRODUCED + DRIFT_DETECT))
  wait_committed
  SINCE="$(( $(date +%s) - SWITCH_EPOCH + 1 ))s"  # the readings ingested since the switch
  step "bp drift --since $SINCE" "$LOGS/drift.log" bash -c '"$1" drift --since "$2" --json >"$3"' _ \
    "$BIN/bp" "$SINCE" "$LOGS/drift.json"
  DRIFT_ARGS=(--drift-report "$LOGS/drift.json" --drift-scenario cuff-offset --drift-switched-at "$SWITCHED_AT"
              --drift-since "$SINCE" --drift-detect "$DRIFT_DETECT")
  CHECK_EPOCH="$(date +%s)"  # the DAG's window ends at its logical date: the same readings
  dag_run "bp_monitor_drift (window $(( CHECK_EPOCH - SWITCH_EPOCH + 1 ))s)" bp_monitor_drift \
    "{\"since\": \"$(( CHECK_EPOCH - SWITCH_EPOCH + 1 ))s\", \"rearm_hours\": 0}" \
    "$(date -u -d "@$CHECK_EPOCH" +%FT%T+00:00)"
  if grep -q "starting task_id=signal " "$LOGS/bp_monitor_drift.log"; then
    DRIFT_ARGS+=(--drift-signalled)
    # `dags test` runs carry no asset events: simulate the data a drift-triggered
    # bp_train_model makes (same generator, world, seed rule and folder), and train on it.
    step "simulate fresh cuff-offset data ($PATIENTS patients, $READINGS readings)" "$LOGS/fresh-data.log" \
      "$PY" "$ROOT/infra/demo.py" fresh-data --scenario cuff-offset --patients "$PATIENTS" --readings "$READINGS" \
      --json "$LOGS/fresh-data.json"
    dag_run "bp_train_model (on the fresh cuff-offset data)" bp_train_model \
      "$(json_conf data_path "$(tail -1 "$LOGS/fresh-data.log")")" "$(date -u +%FT%T+00:00)" "$LOGS/bp_train_model-drift.log"
    models
    ready
    stream "bp produce --scenario cuff-offset --count $DRIFT_COUNT" "$LOGS/produce-drift-2.log" \
      --scenario cuff-offset --count "$DRIFT_COUNT"
    PRODUCED=$((PRODUCED + DRIFT_COUNT))
    wait_committed
    DRIFT_ARGS+=(--drift-data "$LOGS/fresh-data.json" --drift-challenger "$CHALLENGER" --drift-shadow "$DRIFT_COUNT")
    promote_with_evidence "$(date -u +%FT%T+00:00)" "$LOGS/bp_promote_model-drift.log"
  else
    say "bp_monitor_drift signalled no drift: no retraining (see $LOGS/drift.json)"
  fi
  DRIFT_ARGS+=(--drift-seconds "$(since "$T_DRIFT")")
fi

# ---------------------------------------------------------------- 9. summary
"$PY" "$ROOT/infra/demo.py" summary --challenger "$DEMO_CHALLENGER" --metrics-port "$METRICS_PORT" \
  --metrics-before "$LOGS/metrics-before.json" --produced "$PRODUCED" --malformed "$MALFORMED" \
  --e2e-seconds "$E2E" --consumer-pid "$CONSUMER_PID" --consumer-pid-file "$PID_FILE" \
  --consumer-log "$CONSUMER_LOG" $REUSED --airflow-home "$AF_HOME" --json "$LOGS/summary.json" \
  "${DRIFT_ARGS[@]}" >"$LOGS/summary.txt" 2>"$LOGS/summary.log"
rc=$?
cat "$LOGS/summary.txt"
[ "$rc" -eq 0 ] || fail "summary failed: $(tail -1 "$LOGS/summary.log" | cut -c1-200); see $LOGS/summary.log"
say "done in $(since "$T_START") s"
