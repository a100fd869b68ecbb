"""A clone works wherever it lives: ``infra/stack.sh`` from a copy of the repository in a
private folder (mode 700) whose path holds spaces, ``&`` and ``:``.

Each test starts a real Kafka and Elasticsearch from its copy, on free ports of its own
(never the shared stack's 9092/9200 nor the fault suite's 19092/19200), checks that both
answer, and that ``down`` leaves no process behind; ``purge`` then deletes the copy's
state, Elasticsearch's folder outside the clone included. As root, Elasticsearch runs as
its own unprivileged user; as a user who is not root, everything runs as that user.
About 35-40 s a test on 2 idle cores (small heaps; the servers come from the Maven repository
already on the machine).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.integration.helpers import REPO, wait_for

pytestmark = pytest.mark.stack

PRIVATE_FOLDER = "private & co"           # mode 700, like a root user's home
CLONE_NAME = "bp clone: v2 & co"          # a space, a ':' (Java's class path separator) and an '&' (sed's)
FIXED_PORTS = {9092, 9093, 9200, 9300, 19092, 19093, 19200, 19300}
SMALL_HEAPS = {"BP_KAFKA_HEAP": "-Xms128m -Xmx256m", "BP_ES_HEAP": "-Xms256m -Xmx256m"}
IS_ROOT = os.geteuid() == 0


def copy_repository(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in FIXED_PORTS:
            ports.add(port)
    return sorted(ports)


def stack_env(user_home: Path | None = None, **extra: str) -> dict:
    """A clean environment for stack.sh: none of the caller's BP_* settings, ports of its own."""
    kafka, controller, es, transport = free_ports(4)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BP_", "XDG_"))}
    env.update(SMALL_HEAPS, BP_KAFKA_PORT=str(kafka), BP_KAFKA_CONTROLLER_PORT=str(controller),
               BP_ES_PORT=str(es), BP_ES_TRANSPORT_PORT=str(transport), **extra)
    if user_home is not None:
        env["HOME"] = str(user_home)
    return env


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def processes_mentioning(*folders: Path) -> dict[int, str]:
    """Running processes whose command line mentions one of these folders."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(str(folder) in cmdline for folder in folders):
            found[int(pid)] = cmdline[:300]
    return found


class Stack:
    """``infra/stack.sh`` of one copy, run as one user (``runas``: None for the caller)."""

    def __init__(self, clone: Path, env: dict, runas: str | None = None) -> None:
        self.clone, self.env, self.runas = clone, env, runas
        self.script = str(clone / "infra" / "stack.sh")
        self.kafka = f"127.0.0.1:{env['BP_KAFKA_PORT']}"
        self.es_url = f"http://127.0.0.1:{env['BP_ES_PORT']}"

    def run(self, *args: str, check: bool = True, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
        command = [self.script, *args]
        if self.runas:
            command = ["runuser", "-u", self.runas, "--", *command]
        # The caller's folder is outside the clone: a tool's class path relative to it holds the ':'.
        result = subprocess.run(command, env=self.env, cwd=self.clone.parent, capture_output=True, text=True,
                                timeout=timeout, **kwargs)
        if check:
            assert result.returncode == 0, f"stack.sh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    @property
    def es_dir(self) -> Path:
        return Path(os.readlink(self.clone / ".stack" / "elasticsearch"))

    def pid(self, server: str) -> int:
        pidfile = self.clone / ".stack" / "kafka" / "kafka.pid" if server == "kafka" else self.es_dir / "es.pid"
        return int(pidfile.read_text())


def exercise(stack: Stack, *, stop_and_start_kafka: bool = False) -> dict[str, int]:
    """up, both servers answer, (stop and start Kafka), down leaves nothing running.

    Returns the user id each server ran as."""
    from elasticsearch import Elasticsearch
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    stack.run("up")
    assert stack.run("is-up", check=False).returncode == 0
    status = stack.run("status").stdout
    assert "kafka          up" in status and "elasticsearch  up" in status, status
    es_dir = stack.es_dir
    assert stack.clone not in es_dir.parents  # Elasticsearch's own folder lives outside the clone
    owners = {server: uid_of(stack.pid(server)) for server in ("kafka", "elasticsearch")}

    stack.run("kafka", "topics", "--bootstrap-server", stack.kafka, "--create", "--topic", "anywhere",
              "--partitions", "1")
    producer = KafkaProducer(bootstrap_servers=stack.kafka, acks="all")
    for i in range(3):
        producer.send("anywhere", value=f"reading-{i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka, enable_auto_commit=False)
    consumer.assign([TopicPartition("anywhere", 0)])
    consumer.seek_to_beginning()
    received = []
    wait_for(lambda: received.extend(r.value for rs in consumer.poll(500).values() for r in rs) or len(received) >= 3,
             timeout=30, what="the 3 records back from Kafka")
    consumer.close()
    assert received == [b"reading-0", b"reading-1", b"reading-2"]

    es = Elasticsearch(stack.es_url, request_timeout=30)
    es.index(index="anywhere", id="obs-1", document={"systolic": 150}, refresh="wait_for")
    assert es.count(index="anywhere")["count"] == 1
    es.close()

    if stop_and_start_kafka:
        stack.run("stop", "kafka")
        assert stack.run("is-up", check=False).returncode == 1
        stack.run("start", "kafka")
        assert stack.run("is-up", check=False).returncode == 0

    stack.run("down")
    assert stack.run("is-up", check=False).returncode == 1
    assert processes_mentioning(stack.clone, es_dir) == {}
    return owners


def stop_leftovers(*folders: Path) -> None:
    """After a failed test: the servers it started (found by their folders), killed by pid."""
    for pid in processes_mentioning(*folders):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not IS_ROOT, reason="as root only (the next test runs the stack as this user)")
def test_as_root_from_a_private_folder_with_spaces(tmp_path):
    private = tmp_path / PRIVATE_FOLDER
    private.mkdir(mode=0o700)
    clone = copy_repository(private / CLONE_NAME)
    stack = Stack(clone, stack_env())
    try:
        owners = exercise(stack, stop_and_start_kafka=True)
        es_user = pwd.getpwnam("bpstack").pw_uid
        assert owners == {"kafka": 0, "elasticsearch": es_user}
        assert stack.es_dir.parent == Path("/var/lib/bp-monitor")
        assert stack.es_dir.stat().st_uid == es_user
    finally:
        es_dir = stack.es_dir if (clone / ".stack" / "elasticsearch").is_symlink() else None
        stack.run("purge", check=False)
        stop_leftovers(clone, *([es_dir] if es_dir else []))
    assert es_dir is None or not es_dir.exists()
    assert not (clone / ".stack").exists()


def test_as_a_user_who_is_not_root():
    """As root: a throwaway user, whose home (mode 700) holds the clone, given a copy of
    root's Maven repository (BP_MAVEN_REPO: it cannot read root's own). Otherwise: as the
    user running the tests, with their own Maven repository, Elasticsearch's folder in a
    private folder (XDG_STATE_HOME)."""
    user = f"bpt-{uuid.uuid4().hex[:8]}" if IS_ROOT else None
    home = Path(tempfile.mkdtemp(prefix="bp home & co ", dir="/tmp"))  # mode 700; /tmp so a new user can reach it
    extra = {}
    try:
        if user:
            subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin",
                            "--user-group", user], check=True, capture_output=True)
            maven_repo = Path(os.environ.get("BP_MAVEN_REPO", Path.home() / ".m2" / "repository"))
            if maven_repo.is_dir():
                shutil.copytree(maven_repo, home / "maven repository", symlinks=True)
                extra["BP_MAVEN_REPO"] = str(home / "maven repository")
        clone = copy_repository(home / CLONE_NAME)
        if user:
            subprocess.run(["chown", "-R", f"{user}:{user}", str(home)], check=True)
        else:
            extra["XDG_STATE_HOME"] = str(home / "state")
        stack = Stack(clone, stack_env(user_home=home if user else None, **extra), runas=user)
        try:
            uid = pwd.getpwnam(user).pw_uid if user else os.geteuid()
            assert exercise(stack) == {"kafka": uid, "elasticsearch": uid}
            assert stack.es_dir.stat().st_uid == uid
            assert home in stack.es_dir.parents  # ${XDG_STATE_HOME:-~/.local/state}/bp-monitor/es-HASH
        finally:
            es_dir = stack.es_dir if (clone / ".stack" / "elasticsearch").is_symlink() else None
            stack.run("purge", check=False)
            stop_leftovers(clone, *([es_dir] if es_dir else []))
        assert es_dir is None or not es_dir.exists()
    finally:
        if user:
            subprocess.run(["userdel", user], capture_output=True)
            shutil.rmtree(f"/tmp/hsperfdata_{user}", ignore_errors=True)  # the JVMs' own, per user
        shutil.rmtree(home, ignore_errors=True)
