# Source me: Airflow for local (no-Docker) runs of the bp-monitor DAGs.
#
#   source infra/airflow_env.sh [AIRFLOW_HOME]     # default: .stack/airflow (git-ignored)
#   airflow db migrate
#   airflow dags reserialize && airflow dags list    # list reads the DB, not the folder
#   airflow dags test bp_generate_data 2026-03-02 -c '{"patients": 50, "readings": 5000}'
#   airflow standalone        # scheduler + dag-processor + api-server (UI :8080) + triggerer;
#                             # admin password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
#
# Uses the repository's .venv and points Airflow at dags/ and plugins/. BP_* and
# MLFLOW_TRACKING_URI keep their local defaults (see README) unless already set.
_bp_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIRFLOW_HOME="${1:-${AIRFLOW_HOME:-$_bp_root/.stack/airflow}}"
mkdir -p "$AIRFLOW_HOME"
export AIRFLOW__CORE__DAGS_FOLDER="$_bp_root/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$_bp_root/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export BP_DATA_DIR="${BP_DATA_DIR:-$_bp_root/data}"
export PATH="$_bp_root/.venv/bin:$PATH"
unset _bp_root
