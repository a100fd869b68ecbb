"""Airflow UI links to the MLflow and Kibana UIs (Browse menu).

Plain links, not embedded views: a ``url_route`` would render the page in an iframe,
which MLflow's X-Frame-Options header blocks. The addresses are the ones a browser
uses (not the compose service names), from ``BP_MLFLOW_UI_URL`` and ``BP_KIBANA_URL``.
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

MLFLOW_UI_URL = os.environ.get("BP_MLFLOW_UI_URL") or "http://localhost:5000"
KIBANA_URL = os.environ.get("BP_KIBANA_URL") or "http://localhost:5601"


class BpLinksPlugin(AirflowPlugin):
    """Adds 'MLflow' and 'Kibana' to the Airflow UI's Browse menu."""

    name = "bp_links"
    external_views = [
        {"name": "MLflow", "href": MLFLOW_UI_URL, "destination": "nav", "category": "browse"},
        {"name": "Kibana", "href": KIBANA_URL, "destination": "nav", "category": "browse"},
    ]
