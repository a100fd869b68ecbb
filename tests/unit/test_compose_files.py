"""The Docker Compose files: valid for `docker-compose config`, and shaped as documented.

There is no Docker engine here: `docker-compose config` (Debian's docker-compose 1.29)
validates and interpolates a file without one. Secrets come from a .env file; the
tests use a temporary one made from .env.example, never the developer's own .env.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KAFKA_FILE = REPO / "kafka-docker-compose.yml"
AIRFLOW_FILE = REPO / "airflow-docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
NETWORK = "bp-monitor"
SECRET_VARIABLES = ("ELASTIC_PASSWORD", "KIBANA_PASSWORD", "KIBANA_ENCRYPTION_KEY", "POSTGRES_PASSWORD",
                    "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD")


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is not installed: `apt-get install docker-compose` (`make test` does it as root)",
                    pytrace=False)
    return path


def _clean_env() -> dict:
    """The process environment without anything the compose files interpolate."""
    return {k: v for k, v in os.environ.items()
            if k not in SECRET_VARIABLES and not k.startswith(("COMPOSE_", "AIRFLOW", "BP_", "KAFKA_", "ES_"))}


def compose_config(docker_compose: str, compose_file: Path, env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run([docker_compose, "--env-file", str(env_file), "-f", str(compose_file), "config"],
                          cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    """A .env made from .env.example with each CHANGE_ME replaced by a distinct value."""
    text = ENV_EXAMPLE.read_text()
    counter = iter(range(1000))
    text = re.sub(r"CHANGE_ME\w*", lambda m: f"test{next(counter)}secret0123456789abcdef0123456789", text)
    path = tmp_path_factory.mktemp("compose") / ".env"
    path.write_text(text)
    return path


@pytest.fixture(scope="module", params=[KAFKA_FILE, AIRFLOW_FILE], ids=["kafka", "airflow"])
def rendered(request, docker_compose, env_file) -> dict:
    proc = compose_config(docker_compose, request.param, env_file)
    assert proc.returncode == 0, f"docker-compose config {request.param.name}:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def one_shot(service: dict) -> bool:
    return service.get("restart") == "no"


# ------------------------------------------------------------------------ both files

def test_config_is_valid(rendered):
    assert rendered["services"]


def test_every_long_running_service_has_a_healthcheck(rendered):
    for name, service in rendered["services"].items():
        if one_shot(service):
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test != ["NONE"], f"{name} has no healthcheck"


def test_volumes_are_named(rendered):
    declared = set(rendered.get("volumes") or {})
    for name, service in rendered["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith(("/", ".")):
                # bind mounts only for code read from the repository: DAGs, plugins, Kibana objects
                assert Path(source).name in {"dags", "plugins", "kibana"}, f"{name} bind-mounts {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


SECRET_KEY = re.compile(r"PASSWORD|SECRET|ENCRYPTIONKEY|FERNET", re.I)


def _environments(doc: dict):
    """Every environment mapping of a compose document (services and x- anchors)."""
    blocks = [*doc.get("services", {}).values(), *(v for k, v in doc.items() if k.startswith("x-"))]
    for block in blocks:
        env = block.get("environment") if isinstance(block, dict) and "environment" in block else None
        if env is None and isinstance(block, dict) and all(isinstance(v, (str, int)) for v in block.values()):
            env = block  # an x- block that is itself an environment mapping
        if isinstance(env, dict):
            yield env


@pytest.mark.parametrize("path", [KAFKA_FILE, AIRFLOW_FILE], ids=["kafka", "airflow"])
def test_no_literal_secret(path):
    """Passwords and keys are interpolated from .env, never written in the file."""
    checked = 0
    for env in _environments(raw(path)):
        for key, value in env.items():
            if SECRET_KEY.search(key):
                checked += 1
                assert str(value).startswith("${"), f"{path.name}: {key} has a literal value"
            elif "://" in str(value) and "@" in str(value):
                credentials = str(value).split("://", 1)[1].rsplit("@", 1)[0]
                assert ":${" in credentials, f"{path.name}: {key} has a literal password in its URL"
    assert checked >= 3
    # Shell snippets (healthchecks, setup scripts) read secrets from the container's
    # environment ($$VAR), so no secret is interpolated into the command line either.
    text = path.read_text()
    for variable in SECRET_VARIABLES:
        for match in re.finditer(rf"(?<!\$)\$\{{?{variable}", text):
            line = text[text.rfind("\n", 0, match.start()) + 1:text.find("\n", match.start())]
            assert re.match(r"\s*[A-Za-z_.]+:\s", line), f"{path.name}: {variable} interpolated outside environment: {line.strip()}"


@pytest.mark.parametrize("path", [KAFKA_FILE, AIRFLOW_FILE], ids=["kafka", "airflow"])
def test_config_fails_without_the_secrets(docker_compose, path, tmp_path):
    empty = tmp_path / ".env"
    empty.write_text("")
    proc = compose_config(docker_compose, path, empty)
    assert proc.returncode != 0
    assert "in .env" in proc.stderr, proc.stderr


def test_env_example_documents_every_variable():
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    used = set()
    for path in (KAFKA_FILE, AIRFLOW_FILE):
        used |= set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"
    for line in ENV_EXAMPLE.read_text().splitlines():
        if re.match(r"^[A-Z_]+=", line):
            name, value = line.split("=", 1)
            if name in SECRET_VARIABLES:
                assert value.startswith("CHANGE_ME"), f".env.example must hold a placeholder for {name}"


# ------------------------------------------------------------------ kafka + ES + Kibana

def test_kafka_file_services():
    services = raw(KAFKA_FILE)["services"]
    assert {"kafka", "kafka-setup", "elasticsearch", "es-setup", "kibana", "kibana-setup"} <= set(services)
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["elasticsearch"]["image"] == "docker.elastic.co/elasticsearch/elasticsearch:9.4.3"
    assert services["kibana"]["image"] == "docker.elastic.co/kibana/kibana:9.4.3"


def test_kafka_listeners_for_network_and_host():
    env = raw(KAFKA_FILE)["services"]["kafka"]["environment"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:29092" in advertised and "localhost:9092" in advertised
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1


def test_kafka_cluster_id_is_a_kafka_uuid(docker_compose, env_file):
    """KRaft storage formatting refuses anything but a base64url-encoded 16-byte UUID."""
    import base64

    rendered = yaml.safe_load(compose_config(docker_compose, KAFKA_FILE, env_file).stdout)
    cluster_id = rendered["services"]["kafka"]["environment"]["CLUSTER_ID"]
    assert len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_kafka_setup_creates_both_topics():
    setup = raw(KAFKA_FILE)["services"]["kafka-setup"]
    script = " ".join(setup["command"]) if isinstance(setup["command"], list) else setup["command"]
    assert "/opt/kafka/bin/kafka-topics.sh" in script
    assert re.search(r"--topic blood-pressure --partitions 3\b", script)
    assert "--topic blood-pressure.dlq" in script
    assert setup["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_elasticsearch_security_on_and_small_heap():
    env = raw(KAFKA_FILE)["services"]["elasticsearch"]["environment"]
    assert env["xpack.security.enabled"] == "true"
    assert env["discovery.type"] == "single-node"
    assert "-Xmx" in env["ES_JAVA_OPTS"]


def test_kibana_uses_kibana_system_set_by_the_setup_service():
    services = raw(KAFKA_FILE)["services"]
    kibana = services["kibana"]
    assert kibana["environment"]["ELASTICSEARCH_USERNAME"] == "kibana_system"
    assert kibana["depends_on"]["es-setup"]["condition"] == "service_completed_successfully"
    script = " ".join(services["es-setup"]["command"])
    assert "_security/user/kibana_system/_password" in script


def test_kibana_saved_objects_are_imported_from_the_repository():
    assert "KIBANA SAVED OBJECTS IMPORT" in KAFKA_FILE.read_text()
    setup = raw(KAFKA_FILE)["services"]["kibana-setup"]
    assert setup["depends_on"]["kibana"]["condition"] == "service_healthy"
    assert "./infra/kibana:/kibana:ro" in setup["volumes"]
    script = " ".join(setup["command"])
    assert "file=@/kibana/bp-monitor.ndjson" in script and "_import?overwrite=true" in script
    assert (REPO / "infra" / "kibana" / "bp-monitor.ndjson").is_file()


def test_kafka_file_owns_the_named_network():
    doc = raw(KAFKA_FILE)
    assert doc["networks"][NETWORK]["name"] == NETWORK
    assert not doc["networks"][NETWORK].get("external")
    for name, service in doc["services"].items():
        assert NETWORK in service["networks"], f"{name} is not on {NETWORK}"


# ----------------------------------------------------------------- Airflow + MLflow

def test_airflow_file_services():
    services = raw(AIRFLOW_FILE)["services"]
    assert {"postgres", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "mlflow", "bp-consumer"} <= set(services)


def test_airflow_common_settings():
    doc = raw(AIRFLOW_FILE)
    common = doc["x-airflow-common"]
    assert common["build"]["dockerfile"] == "infra/airflow/Dockerfile"
    env = common["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["BP_KAFKA_BOOTSTRAP"] == "kafka:29092"
    assert env["BP_ES_URL"] == "http://elasticsearch:9200"
    mounts = {volume.split(":")[1] for volume in common["volumes"]}
    assert {"/opt/airflow/dags", "/opt/airflow/plugins"} <= mounts


def test_airflow_components_share_the_jwt_secret_and_execution_api(docker_compose, env_file):
    rendered = yaml.safe_load(compose_config(docker_compose, AIRFLOW_FILE, env_file).stdout)
    airflow = {name: s for name, s in rendered["services"].items() if name.startswith("airflow-")}
    secrets = {s["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for s in airflow.values()}
    assert len(airflow) == 5 and len(secrets) == 1
    assert {s["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] for s in airflow.values()} == {
        "http://airflow-apiserver:8080/execution/"}


def test_mlflow_server_command():
    mlflow = raw(AIRFLOW_FILE)["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--workers=1" in command
    assert "--artifacts-destination=/mlflow/artifacts" in command
    hosts = re.search(r"--allowed-hosts=(\S+)", command).group(1).split(",")
    assert {"mlflow", "mlflow:5000", "localhost", "localhost:5000", "127.0.0.1:5000"} <= set(hosts)
    assert "5000" in " ".join(mlflow["ports"])


def test_consumer_service_runs_the_slim_image(docker_compose, env_file):
    consumer = raw(AIRFLOW_FILE)["services"]["bp-consumer"]
    assert consumer["build"]["dockerfile"] == "infra/consumer/Dockerfile"
    assert consumer["image"].startswith("${BP_CONSUMER_IMAGE:-bp-monitor/consumer:")
    assert consumer["entrypoint"] == ["bp"]
    assert consumer["command"][:3] == ["consume", "--metrics-port", "9108"]
    assert consumer["restart"] == "unless-stopped"
    assert consumer["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "curl" not in consumer["healthcheck"]["test"]  # python:3.11-slim has none
    rendered = yaml.safe_load(compose_config(docker_compose, AIRFLOW_FILE, env_file).stdout)["services"]
    env = rendered["bp-consumer"]["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and env["BP_KAFKA_BOOTSTRAP"] == "kafka:29092"
    # The data volume the Airflow tasks share, mounted where the consumer's settings point.
    mounts = dict(volume.split(":")[:2] for volume in rendered["bp-consumer"]["volumes"])
    assert mounts["bp-data"] == env["BP_DATA_DIR"] and env["BP_ARCHIVE_DIR"].startswith(env["BP_DATA_DIR"] + "/")
    airflow_mounts = dict(volume.split(":")[:2] for volume in rendered["airflow-scheduler"]["volumes"])
    assert airflow_mounts["bp-data"] == rendered["airflow-scheduler"]["environment"]["BP_DATA_DIR"]


def test_airflow_file_joins_the_external_network():
    network = raw(AIRFLOW_FILE)["networks"]["default"]
    assert network == {"name": NETWORK, "external": True}


# ------------------------------------------------------------------------ the images

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK = dict(line.strip().split("==") for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pin(requirement: str) -> tuple[str, str]:
    name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", requirement).groups()
    return normalized(name), version


def pip_installs(dockerfile: Path) -> list[str]:
    return [line for line in dockerfile.read_text().splitlines() if re.match(r"RUN .*\bpip install\b", line)]


def test_dependency_groups():
    """The base set is the consumer's runtime (the slim image); Airflow and the full MLflow
    come with the airflow extra; every requirement is pinned at the lock's version."""
    base = dict(map(pin, PYPROJECT["project"]["dependencies"]))
    extras = {name: dict(map(pin, requirements)) for name, requirements in PYPROJECT["project"]["optional-dependencies"].items()}
    assert set(extras) == {"airflow", "dev"}
    assert {"kafka-python", "elasticsearch", "scikit-learn", "skops", "numpy", "msgspec", "orjson",
            "prometheus-client", "mlflow-skinny"} <= set(base)
    assert not {"apache-airflow", "mlflow", "faker", "pyarrow", "fhir-resources", "pytest"} & set(base)
    assert {"apache-airflow", "mlflow"} <= set(extras["airflow"])
    lock = {normalized(name): version for name, version in LOCK.items()}
    for name, version in [*base.items(), *(item for group in extras.values() for item in group.items())]:
        assert lock.get(name) == version, f"{name}=={version} in pyproject.toml, {lock.get(name)} in requirements.lock"


def test_consumer_image_is_slim_and_pinned_by_the_lock():
    dockerfile = REPO / "infra" / "consumer" / "Dockerfile"
    text = dockerfile.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim\b", text, re.M)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the consumer must not run as root"
    installs = pip_installs(dockerfile)
    product = [line for line in installs if line.rstrip().endswith(" .")]
    assert len(product) == 1 and "-c requirements.lock" in product[0], installs
    assert not re.search(r"\.\[", text), "the slim image installs the base set, no extra"
    # Only pinned build tools besides: pip never picks an unpinned version.
    for line in installs:
        if line not in product:
            assert all("==" in arg for arg in re.findall(r'"([^"]+)"', line)), line
    assert "requirements.lock" in re.search(r"^COPY (.*)$", text, re.M).group(1)
    assert "!requirements.lock" in (REPO / "infra" / "consumer" / "Dockerfile.dockerignore").read_text()


def test_airflow_image_is_pinned_by_the_lock_with_airflow_on_the_install_line():
    dockerfile = REPO / "infra" / "airflow" / "Dockerfile"
    assert re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:3\.3\.2-python3\.11$", dockerfile.read_text(), re.M)
    (install,) = pip_installs(dockerfile)
    assert "-c /opt/bp-monitor/requirements.lock" in install
    assert '"apache-airflow==3.3.2"' in install and '"/opt/bp-monitor[airflow]"' in install
    assert "!requirements.lock" in (REPO / "infra" / "airflow" / "Dockerfile.dockerignore").read_text()
    assert "!requirements.lock" in (REPO / ".dockerignore").read_text()
