#!/usr/bin/env bash
# The system tools the test suite uses beside the Python environment, installed with
# apt-get when they are missing (as root on Debian/Ubuntu, the CI machine's case):
#   docker-compose        validates the compose files (no Docker engine needed)
#   unzip                 unpacks Elasticsearch (infra/stack.sh)
#   chromium, chromedriver  the browser tests of the Airflow and MLflow UIs
# Elsewhere it says what is missing and goes on: the compose tests then fail with the
# same hint and the browser tests skip. BP_SKIP_SYSTEM_TOOLS=1 skips this step.
set -uo pipefail

[ "${BP_SKIP_SYSTEM_TOOLS:-0}" = 1 ] && exit 0
need=()
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v unzip >/dev/null || need+=(unzip)
command -v "${BP_CHROMIUM:-chromium}" >/dev/null && command -v "${BP_CHROMEDRIVER:-chromedriver}" >/dev/null \
  || need+=(chromium chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "[system-tools] missing: ${need[*]} (as root on Debian: apt-get install ${need[*]})" >&2
  exit 0
fi
echo "[system-tools] installing ${need[*]} with apt-get (once)"
log="$(mktemp /tmp/bp-apt.XXXXXX.log)"
if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >"$log" 2>&1; then
  rm -f "$log"
else
  echo "[system-tools] apt-get failed (the tests that need them will say so); its log: $log" >&2
  tail -5 "$log" >&2
fi
exit 0
