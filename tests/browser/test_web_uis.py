"""The Airflow and MLflow web UIs, rendered by headless Chromium, show what the DAG chain
made: the five DAGs and their runs, the plugin's MLflow/Kibana links, and the champion
alias of ``bp-anomaly-classifier``.

Both UIs are React single-page apps: the assertions wait for elements the JavaScript
renders, so a blank page, a login form or an API error fails them. Screenshots and the
rendered DOM: ``test-artifacts/browser/``. See README.md here.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from tests.browser.conftest import DAG_IDS, MODEL

pytestmark = [pytest.mark.browser, pytest.mark.airflow]
RUN_DAGS = ("bp_generate_data", "bp_train_model", "bp_promote_model")  # run by the ui_stack fixture


@pytest.fixture(scope="module")
def dag_list(browser, ui_stack):
    """The Airflow DAG list page, loaded once: (browser, {dag_id: latest-run hrefs})."""
    browser.get(f"{ui_stack.airflow_url}/dags")
    # One atomic DOM read per poll: {dag id: hrefs of its card's "Latest Run" links}.
    cards = browser.wait_js("""
        const out = {};
        for (const card of document.querySelectorAll('[data-testid="dag-card"]')) {
            const id = card.querySelector('[data-testid="dag-id"]');
            if (id) out[id.textContent.trim()] = Array.from(
                card.querySelectorAll('[data-testid="latest-run"] a')).map(a => a.getAttribute('href'));
        }
        return out;""", lambda found: set(DAG_IDS) <= set(found or {}) and all(found[d] for d in RUN_DAGS),
        what="the Airflow DAG cards with their latest runs")
    browser.save("airflow-dags")
    return browser, cards


def test_airflow_dag_list_shows_the_five_dags(dag_list, ui_stack):
    browser, cards = dag_list
    # Not bounced to a login form: all-admins mode logs the browser in by itself.
    assert urlparse(browser.current_url).path == "/dags", browser.current_url
    assert "Airflow" in browser.title
    assert sorted(cards) == sorted(DAG_IDS)


def test_airflow_dag_list_shows_the_successful_runs(dag_list):
    _, runs = dag_list
    # Each card's "Latest Run" links to its run: the three DAGs run by the fixture have one,
    # the manual stream simulation none.
    for dag_id in RUN_DAGS:
        assert any(href.startswith(f"/dags/{dag_id}/runs/manual__") for href in runs[dag_id]), runs
    assert runs["bp_stream_simulation"] == [], runs


def test_airflow_browse_menu_has_the_plugin_links(dag_list, ui_stack):
    browser, _ = dag_list
    (menu,) = browser.wait_for('button[aria-label="Browse"]', what="the Browse menu button")
    browser.click(menu)
    # The plugin's external views: {link text: href} of the open menu's external links.
    links = browser.wait_js("""
        const out = {};
        for (const a of document.querySelectorAll('[data-scope="menu"][data-part="content"] a[href^="http"]'))
            out[a.textContent.trim()] = a.getAttribute('href');
        return out;""", lambda found: {"MLflow", "Kibana"} <= set(found or {}),
        what="MLflow and Kibana links in the Browse menu")
    browser.save("airflow-browse-menu")
    assert links["MLflow"] == ui_stack.mlflow_url, links
    assert links["Kibana"] == ui_stack.kibana_url, links


def test_mlflow_registry_page_shows_the_champion_alias(browser, ui_stack):
    browser.get(f"{ui_stack.mlflow_url}/#/models/{MODEL}")
    alias_tags = '[data-component-id*="aliastag"]'
    browser.wait_for(f'{alias_tags}[title="champion"]', what=f"the champion alias tag on {MODEL}'s page")
    browser.save("mlflow-model")
    assert MODEL in browser.js("return document.body.innerText")
    aliases = browser.js(f"return Array.from(document.querySelectorAll('{alias_tags}[title]'))"
                         ".map(e => e.getAttribute('title'))")
    # v1, the only version: trained (challenger) and promoted, as nothing was champion yet.
    assert sorted(set(aliases)) == ["challenger", "champion"], aliases
