"""Consumer throughput, end to end, against the real local stack, as ratios in one run.

    .venv/bin/python bench/bench_consumer.py --messages 100000 [--profile]

On one fresh topic filled by ``bp produce`` with realistic cohort readings:

1. raw read: a plain kafka-python consumer reading every message (the ceiling for any
   Python consumer: it does nothing with the bytes); and the same read with the C record
   decoder ``bp consume`` plugs into kafka-python (bp_core/consumer/native_records.py),
   the like-for-like ceiling;
2. ours: ``ConsumerService`` (parse, validate, rules, one vectorised model call per
   batch, bulk index anomalies, archive + fsync, commit), serving a champion model
   registered in a temporary MLflow store; each run with its own consumer group, index
   and archive, so every run does the whole work;
3. seed-style: the original brief's loop on a sample: per message ``json.loads``,
   one ``predict_proba`` call and one Elasticsearch ``index`` request per anomaly, one
   archive write per normal.

The raw read and ours alternate ``--repeat`` times and the ratio is taken between their
medians: on a small shared machine a single run of either can be off by a third.
``--warmup`` untimed runs of each come first (default 3, about 115,000 indexed
documents), their figures discarded: a freshly started Elasticsearch spends several
times the CPU per document while its JIT compiles the indexing path. Bulk-indexing the
same 37,000 documents into a fresh index, run after run, took it 11.9 CPU-seconds for
the first two runs, 6.2 for the next two and 4.7 for the two after (of which 7.2, 3.9
and 2.2 in its compiler threads), and about 1.0 a run once warm: work the cluster of a
long-running consumer did long ago. Three runs do not finish it: warming goes on, up to
``--max-warmup`` runs (default 15), until Elasticsearch's compiler threads used at most
``--warm-jit-share`` (default 5%) of its CPU in a run, and the report still splits the
JIT's share out of Elasticsearch's CPU.
``--pinned N`` then alternates N more runs of each with the stack's servers (Elasticsearch,
the Kafka broker: every thread) pinned to the last core and this process to the others:
the consumer gets a core to itself, as if Elasticsearch ran on another host (as long as
its own core is not saturated: the report gives its share). That tells whether the
machine or the consumer process is the bound. Every affinity is restored afterwards; and
should a run be killed inside, the next one gives the servers their cores back first.
``--bounds N`` then does N rounds of a raw read and six runs of ours, in an order that
rotates from round to round: as is; with every batch's parse, score and route looked up
(computed before the run by ``route_records`` itself: what a hot path that took no time,
native code included, could gain end to end); with its bulk requests encoded but not sent
(the consumer process on its own, as if Elasticsearch ran on another host and answered at
once); with both; with each bulk request sent as two at once; and with the lookup and two
at once. It tells which bound the rate: Elasticsearch's share of this machine, or the
consumer's own work. Each round also sends a run's bulk requests to Elasticsearch alone,
one and then two in flight, with nothing else running: how fast this machine's
Elasticsearch takes a run's anomalies, the ceiling of any consumer that indexes them
before it commits.
With ``--profile``, one more run of ours is profiled (pyinstrument slows it: that run
shows where the time goes, not the rate).

Prints a markdown section (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def drop_bench_resources(settings, admin) -> None:
    """Delete a benchmark's topics, indices and index template (and close ``admin``)."""
    from elasticsearch import Elasticsearch

    admin.delete_topics([settings.topic, settings.dlq_topic])
    admin.close()
    es = Elasticsearch(settings.es_url)
    es.options(ignore_status=404).indices.delete(index=f"{settings.es_index}*")
    es.options(ignore_status=404).indices.delete_index_template(name=f"{settings.es_index}*")
    es.close()


def fill_topic(settings, count: int) -> float:
    from bp_core.simulation.stream import produce

    started = time.monotonic()
    summary = produce(settings, count=count, patients=2000, seed=7)
    assert summary.failed == 0, summary
    return time.monotonic() - started


def register_champion(settings) -> str:
    from bp_core.simulation.datasets import generate_dataset
    from bp_core.model.promotion import promote
    from bp_core.model.training import train_and_register

    data = generate_dataset(settings.data_dir / "bench-train", patients=300, readings=60_000, seed=3)
    result = train_and_register(settings, data, seed=3)
    promote(settings, holdout_readings=20_000)
    return result.model_version


def topic_reader(settings, **config):
    """A consumer without a group, assigned every partition of the bench topic from its start."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", **config)
    consumer.assign([TopicPartition(settings.topic, p) for p in consumer.partitions_for_topic(settings.topic)])
    return consumer


def raw_read(settings, count: int, native: bool = False) -> float:
    from bp_core.consumer.native_records import use_native_records

    consumer = topic_reader(settings, max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024,
                            max_partition_fetch_bytes=8 * 1024 * 1024)
    if native and not use_native_records(consumer):
        raise SystemExit("the C record decoder is not available here")
    seen = 0
    started = None
    while seen < count:
        for records in consumer.poll(timeout_ms=1000).values():
            if started is None:
                started = time.monotonic()
            seen += len(records)
    elapsed = time.monotonic() - started
    consumer.close()
    return elapsed


class PreparePrecomputed:
    """Within: bp consume's parse, score and route of a batch is a lookup of what each of
    its records gives, computed beforehand by ``route_records`` itself over every message
    of the topic, with the model bp consume serves (``--bounds``).

    What the hot path costs end to end, measured: the runs inside differ from bp consume
    only there. The lookup still assembles each batch's outcome record by record, in
    Python, about what a native hot path would hand back too.
    """

    ANOMALY, NORMAL, REJECT = range(3)

    def __init__(self, settings, count: int) -> None:
        from datetime import datetime, timezone

        from bp_core.consumer.batch import route_records
        from bp_core.model.serving import ModelProvider
        from bp_core.rules import Thresholds

        provider = ModelProvider(settings)
        provider.start()
        model, thresholds, now = provider.current, Thresholds.from_settings(settings), datetime.now(timezone.utc)
        consumer = topic_reader(settings, max_poll_records=5000)
        self.outcomes: dict[tuple[int, int], tuple] = {}
        self.bulks: list[list] = []  # each poll's anomaly documents: the bulk request bp consume sends for it
        seen = 0
        while seen < count:
            polled = consumer.poll(timeout_ms=1000)
            if polled:
                self.bulks.append([])
            for records in polled.values():
                seen += len(records)
                outcome = route_records(records, thresholds, model, settings.model_threshold, now)
                self.bulks[-1] += outcome.anomaly_documents
                for record, document in zip(outcome.anomaly_records, outcome.anomaly_documents):
                    self._put(record.partition, record.offset, self.ANOMALY, document, "+".join(document.detected_by))
                for partition, lines in outcome.normals.items():
                    for line in lines:
                        self._put(partition, line[0][0], self.NORMAL, line, None)
                for record, reason in outcome.rejects:
                    self._put(record.partition, record.offset, self.REJECT, reason, None)
        consumer.close()
        provider.close()

    def _put(self, partition: int, offset: int, kind: int, item, layer) -> None:
        if (partition, offset) in self.outcomes:  # the lookup below takes one outcome per message
            raise SystemExit(f"--bounds: message {partition}/{offset} holds several readings; the bench's hold one")
        self.outcomes[partition, offset] = (kind, item, layer)

    def route_records(self, records, thresholds, model, model_threshold, now):
        from bp_core.consumer.batch import BatchOutcome

        outcome = BatchOutcome()
        documents, sources, normals, rejects, layers = (outcome.anomaly_documents, outcome.anomaly_records,
                                                        outcome.normals, outcome.rejects, outcome.layers)
        outcomes, anomaly, normal = self.outcomes, self.ANOMALY, self.NORMAL
        messages = 0
        for record in records:
            messages += 1
            kind, item, layer = outcomes[record.partition, record.offset]
            if kind == anomaly:
                sources.append(record)
                documents.append(item)
                layers[layer] = layers.get(layer, 0) + 1
            elif kind == normal:
                lines = normals.get(record.partition)
                if lines is None:
                    lines = normals[record.partition] = []
                lines.append(item)
            else:
                rejects.append((record, item))
        outcome.messages = messages
        outcome.readings = len(documents) + sum(len(lines) for lines in normals.values())
        return outcome

    def __enter__(self):
        from bp_core.consumer import service

        self._route, service.route_records = service.route_records, self.route_records
        return self

    def __exit__(self, *exc) -> None:
        from bp_core.consumer import service

        service.route_records = self._route


def elasticsearch_alone(settings, bulks: list[list], run: str, in_flight: int = 1) -> tuple[float, dict]:
    """Elasticsearch's work of one run of bp consume, and nothing else: the run's bulk
    requests (``bulks``: each batch's anomaly documents, from ``PreparePrecomputed``) sent
    back to back through ``ElasticsearchSink``, as bp consume sends them, into a fresh index
    made from the same template, ``in_flight`` at a time (``--bounds``).

    With as many requests in flight as the node has write threads (one per core), no
    consumer can index a run's anomalies faster on this machine, even one whose reading,
    parsing, scoring, routing and archiving cost nothing. Returns (seconds
    from the first request to the last answer, CPU seconds spent meanwhile by this process
    and the stack's servers).
    """
    from concurrent.futures import ThreadPoolExecutor

    from elasticsearch import Elasticsearch

    from bp_core.sinks.elasticsearch import ElasticsearchSink
    from bp_core.sinks.es_template import ensure_index_template

    index = f"{settings.es_index}-{run}"
    es = Elasticsearch(settings.es_url, request_timeout=30)
    ensure_index_template(es, index)

    def send(documents: list) -> None:
        sink = ElasticsearchSink(es, index)
        sink.extend([document.observation_id for document in documents], documents, [None] * len(documents))
        rejected = sink.flush()
        assert not rejected, rejected[0]

    with ThreadPoolExecutor(in_flight) as pool:
        cpu_first = cpu_seconds()
        started = time.monotonic()
        for _ in pool.map(send, bulks):
            pass
        elapsed = time.monotonic() - started
        cpu_last = cpu_seconds()
    es.indices.refresh(index=index)
    indexed = es.count(index=index)["count"]
    assert indexed == sum(map(len, bulks)), f"{indexed} of {sum(map(len, bulks))} documents indexed"
    es.close()
    return elapsed, {name: cpu_last[name] - cpu_first.get(name, 0.0) for name in cpu_last}


class BulkNotSent:
    """Within: bp consume's Elasticsearch bulk requests are encoded as usual but not sent,
    and every document counts as indexed (``--bounds``).

    What Elasticsearch's share of this machine costs end to end, measured: the runs
    inside differ from bp consume only there, so the consumer process does all its own
    work (parse, score, route, encode the bulk body, archive with fsync, dead letters,
    commit) while Elasticsearch does none. A diagnostic of the benchmark only: nothing
    in bp_core can skip its writes.
    """

    def __enter__(self):
        from bp_core.sinks.elasticsearch import ElasticsearchSink, bulk_body

        def encode_only(sink):
            if sink._ids:
                bulk_body(sink._ids, sink._documents)
            sink._ids, sink._keys, sink._documents = [], [], []
            return sink._take_rejected()

        self._flush, ElasticsearchSink.flush = ElasticsearchSink.flush, encode_only
        return self

    def __exit__(self, *exc) -> None:
        from bp_core.sinks.elasticsearch import ElasticsearchSink

        ElasticsearchSink.flush = self._flush


class BulkSplit:
    """Within: bp consume sends each batch's bulk request as ``parts`` requests at once, each
    with its share of the documents, and the batch is written when all have answered
    (``--bounds``).

    Elasticsearch indexes one bulk request on one write thread; with nothing else running
    here, two requests in flight index a run's anomalies 1.5 to 2 times as fast as one
    (``elasticsearch_alone``). The runs inside tell whether bp consume would gain as much
    beside Elasticsearch on this machine. A diagnostic of the benchmark only: a failure of
    one part is not handled as bp_core's sink handles it.
    """

    def __init__(self, parts: int = 2) -> None:
        self.parts = parts

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        from bp_core.sinks.elasticsearch import ElasticsearchSink

        flush, parts = ElasticsearchSink.flush, self.parts
        pool = self._pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="bench-bulk-part")

        def split_flush(sink):
            count = len(sink._ids)
            shares = []
            for part in range(parts):
                first, last = part * count // parts, (part + 1) * count // parts
                share = ElasticsearchSink(sink.es, sink.index)
                share.extend(sink._ids[first:last], sink._documents[first:last], sink._keys[first:last])
                shares.append(share)
            others = [pool.submit(flush, share) for share in shares[1:]]
            rejected = flush(shares[0])
            for other in others:
                rejected += other.result()
            sink._ids, sink._keys, sink._documents = [], [], []
            return rejected + sink._take_rejected()

        self._flush, ElasticsearchSink.flush = flush, split_flush
        return self

    def __exit__(self, *exc) -> None:
        from bp_core.sinks.elasticsearch import ElasticsearchSink

        ElasticsearchSink.flush = self._flush
        self._pool.shutdown()


def stack_pids() -> dict[str, int]:
    """The local stack's server processes that are running, by name."""
    stack = Path(os.environ.get("BP_STACK_DIR", REPO / ".stack"))
    pids = {}
    for name, pid_file in (("Elasticsearch", stack / "elasticsearch" / "es.pid"), ("Kafka broker", stack / "kafka" / "kafka.pid")):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if os.path.exists(f"/proc/{pid}"):
            pids[name] = pid
    return pids


def cpu_seconds() -> dict[str, float]:
    """CPU time so far of this process and of the local stack's servers (when found)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = {"consumer process": usage.ru_utime + usage.ru_stime}
    for name, pid in stack_pids().items():
        try:
            cpu[name] = _stat_cpu_seconds(open(f"/proc/{pid}/stat").read())
        except (OSError, ValueError, IndexError):
            continue
        if name == "Elasticsearch":
            cpu[JIT] = _jit_cpu_seconds(pid)
    return cpu


def _set_affinity(pid: int, cores: set[int]) -> None:
    """Pin every thread of a process (a JVM starts threads later: they inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except ProcessLookupError:
            continue  # the thread ended meanwhile


def _online_cores() -> set[int]:
    """The machine's online cores (``/sys/devices/system/cpu/online``: ``0-1``, ``0,2-3``)."""
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
        cores: set[int] = set()
        for part in text.split(","):
            first, _, last = part.partition("-")
            cores.update(range(int(first), int(last or first) + 1))
        return cores
    except (OSError, ValueError):
        return set(range(os.cpu_count() or 1))


def unpin_stack() -> list[str]:
    """Give the stack's servers every core again; the names of those that were pinned.

    ``Pinned`` restores the affinities on its way out, but a benchmark killed with -9
    inside it leaves the servers on one core until they restart: every later run
    would then measure a stack squeezed onto one core.
    """
    every_core = _online_cores()
    unpinned = []
    for name, pid in stack_pids().items():
        try:
            if any(_affinity(int(tid)) not in (None, every_core) for tid in os.listdir(f"/proc/{pid}/task")):
                _set_affinity(pid, every_core)
                unpinned.append(name)
        except OSError:
            continue  # gone meanwhile, or another user's process: left as it is
    return unpinned


def _affinity(tid: int) -> set[int] | None:
    """A thread's cores, or None when it ended meanwhile."""
    try:
        return os.sched_getaffinity(tid)
    except ProcessLookupError:
        return None


class Pinned:
    """Within the block: the stack's servers on the last core, this process on the others.

    Restores every affinity on exit. When the servers cannot be pinned (another user's
    processes), nothing stays pinned and ``failure`` says why.
    """

    def __init__(self) -> None:
        self.all_cores = os.sched_getaffinity(0)
        self.stack_core = {max(self.all_cores)}
        self.pids = list(stack_pids().values())
        self.failure: str | None = None

    def __enter__(self) -> "Pinned":
        try:
            for pid in self.pids:
                _set_affinity(pid, self.stack_core)
            _set_affinity(os.getpid(), self.all_cores - self.stack_core)
        except OSError as exc:
            self.__exit__()
            self.failure = f"cannot pin the stack's servers: {exc.strerror}"
        return self

    def __exit__(self, *exc) -> None:
        for pid in [*self.pids, os.getpid()]:
            try:
                _set_affinity(pid, self.all_cores)
            except OSError:
                continue


def _stat_cpu_seconds(stat: str) -> float:
    """User + system CPU seconds from the text of a /proc/<pid>[/task/<tid>]/stat file."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


JIT = "Elasticsearch JIT"  # its HotSpot compiler threads: most of a freshly started node's CPU


def _jit_cpu_seconds(pid: int) -> float:
    """CPU time so far of a JVM's JIT compiler threads ('C1/C2 CompilerThre...')."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue  # the thread ended meanwhile
        if "CompilerThre" in stat[stat.index("(") + 1:stat.rindex(")")]:
            total += _stat_cpu_seconds(stat)
    return total


def thread_cpu_seconds() -> dict[str, float]:
    """CPU time so far of each thread of this process, by thread name."""
    import threading

    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    cpu: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = open(f"/proc/self/task/{tid}/stat").read()
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(tid), "other")
        cpu[name] = cpu.get(name, 0.0) + _stat_cpu_seconds(stat)
    return cpu


def ours(settings, profile: bool, run: str = "r0", messages: int = 0):
    """One full run of the consumer over the ``messages`` of the topic, with its own
    group, index and archive.

    Returns (seconds from the first batch to the last durable one, stats, profiler,
    CPU seconds spent over that span by the consumer and the stack's servers).
    """
    from bp_core.consumer.service import ConsumerOptions, ConsumerService

    class MeasuredService(ConsumerService):
        cpu_first = cpu_last = None

        def _prepare(self, batch):
            if self.cpu_first is None:
                self.cpu_first = {**cpu_seconds(), **thread_cpu_seconds()}
            return super()._prepare(batch)

        def _account(self, prepared):
            super()._account(prepared)
            # Once, after the last batch: reading /proc for every thread of the stack's
            # JVMs after each batch would put the benchmark's own cost into the run.
            if self.cpu_last is None and self.stats.messages >= messages:
                self.cpu_last = {**cpu_seconds(), **thread_cpu_seconds()}

    settings = settings.with_(consumer_group=f"{settings.consumer_group}-{run}",
                              es_index=f"{settings.es_index}-{run}", archive_dir=settings.archive_dir / run)
    service = MeasuredService(settings, ConsumerOptions(exit_when_idle=2.0, model_refresh=3600))
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    assert service.run() == 0
    if profiler:
        profiler.stop()
    assert service.cpu_last is not None, f"the run saw {service.stats.messages} of {messages} messages"
    elapsed = service.stats.last_batch_at - service.stats.first_batch_at
    cpu = {name: service.cpu_last[name] - service.cpu_first.get(name, 0.0) for name in service.cpu_last}
    return elapsed, service.stats, profiler, cpu


def seed_style(settings, sample: int) -> tuple[float, int]:
    """The brief's loop: one predict call and one index request per message."""
    from elasticsearch import Elasticsearch

    from bp_core.features import feature_matrix
    from bp_core.model.serving import ModelProvider

    provider = ModelProvider(settings)
    provider.start()
    model = provider.current
    es = Elasticsearch(settings.es_url)
    index = f"seed-style-{settings.es_index}"  # outside the strict template's pattern
    archive = open(settings.data_dir / "seed-style-archive.json", "a")
    consumer = topic_reader(settings)
    import numpy as np

    done = 0
    started = time.monotonic()
    for message in consumer:
        obs = json.loads(message.value)
        values = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]}
        systolic, diastolic = values["8480-6"], values["8462-4"]
        probability = float(model.predict_proba(feature_matrix(np.array([systolic], float), np.array([diastolic], float)))[0])
        anomaly = systolic > 140 or systolic < 90 or diastolic > 90 or diastolic < 60 or probability >= 0.5
        doc = {"observation_id": obs["id"], "patient": obs["subject"]["reference"], "systolic": systolic,
               "diastolic": diastolic, "probability": probability}
        if anomaly:
            es.index(index=index, id=obs["id"], document=doc)
        else:
            archive.write(json.dumps(doc) + "\n")
            archive.flush()
        done += 1
        if done >= sample:
            break
    elapsed = time.monotonic() - started
    consumer.close()
    archive.close()
    es.options(ignore_status=404).indices.delete(index=index)
    es.close()
    return elapsed, done


def arm_rounds(settings, messages: int, rounds: int, arms: dict[str, tuple], label: str,
               probes: dict[object, Callable[[str], tuple[float, dict]]] | None = None) -> tuple[list, dict, dict]:
    """``rounds`` rounds of a raw read (the machine's speed drifts: one each round), then
    each of ``probes`` (a function of a run label returning (seconds, CPU seconds)), then one
    run of bp consume per arm, within that arm's context managers, in an order that rotates
    from round to round (no arm always goes first); ``label`` names their groups, indices
    and archives, so no two sets of rounds share one. Returns (raw read seconds, each arm's
    runs, each probe's runs)."""
    raw_runs: list[float] = []
    runs: dict[str, list] = {name: [] for name in arms}
    probe_runs: dict[str, list] = {name: [] for name in probes or {}}
    names = list(arms)
    for run in range(rounds):
        raw_runs.append(raw_read(settings, messages))
        for number, (name, probe) in enumerate((probes or {}).items()):
            probe_runs[name].append(probe(f"{label}-probe{number}-{run}"))
        for name in names[run % len(names):] + names[:run % len(names)]:
            with contextlib.ExitStack() as stack:
                for context in arms[name]:
                    stack.enter_context(context)
                seconds, stats, _, cpu = ours(settings, False, f"{label}-{names.index(name)}-{run}", messages)
            runs[name].append((seconds, stats, cpu))
    return raw_runs, runs, probe_runs


def summarise(messages: int, raw_runs: list[float], our_runs: list[tuple[float, object, dict]]):
    """Rates of alternating runs: (raw rates, our rates, their medians, our median run)."""
    raw_rates = [messages / seconds for seconds in raw_runs]
    our_rates = [stats.messages / seconds for seconds, stats, _ in our_runs]
    median_run = sorted(our_runs, key=lambda run: run[0])[len(our_runs) // 2]
    return raw_rates, our_rates, statistics.median(raw_rates), statistics.median(our_rates), median_run


def pinned_section(messages: int, raw_runs: list[float], our_runs: list[tuple[float, object, dict]]) -> list[str]:
    """The report of the runs with the stack's servers pinned to a core of their own."""
    raw_rates, our_rates, raw_rate, our_rate, (seconds, _, cpu) = summarise(messages, raw_runs, our_runs)
    ours_cores = len(os.sched_getaffinity(0)) - 1
    share = {name: cpu[name] / seconds for name in ("consumer process", "Elasticsearch", "Kafka broker") if name in cpu}
    stack_share = share.get("Elasticsearch", 0.0) + share.get("Kafka broker", 0.0)
    bound = "the consumer's core" if share["consumer process"] / ours_cores >= stack_share else "the stack's core"
    return [
        "",
        f"Then {len(our_runs)} more run{'s' if len(our_runs) > 1 else ''} of each, alternating, with Elasticsearch and the Kafka broker (every thread) "
        f"pinned to the last core and this process to the other {f'{ours_cores} cores' if ours_cores > 1 else 'core'}: "
        f"the consumer has {'them' if ours_cores > 1 else 'it'} to itself, "
        "as if Elasticsearch ran on another host, as long as the stack's core is not saturated.",
        "",
        "| path, stack pinned | messages/s (median) | runs (messages/s) | ratio |",
        "|---|---:|---|---:|",
        f"| raw kafka-python read | {raw_rate:,.0f} | {', '.join(f'{r:,.0f}' for r in raw_rates)} | 1.00 |",
        f"| bp consume | {our_rate:,.0f} | {', '.join(f'{r:,.0f}' for r in our_rates)} | {our_rate / raw_rate:.3f} × raw |",
        "",
        f"Over the median pinned run ({seconds:.2f} s), busy share of a core: consumer process "
        f"{share['consumer process']:.0%} (of {ours_cores}), Elasticsearch {share.get('Elasticsearch', 0.0):.0%} and "
        f"Kafka broker {share.get('Kafka broker', 0.0):.0%} (together on one core). The bound is {bound}.",
    ]


def _arms_table(messages: int, raw_runs: list[float],
                runs: dict[str, list]) -> tuple[list[str], dict[str, dict], tuple[int, int, int]]:
    """The table of ``arm_rounds``' runs, the first arm being bp consume as is. Returns (its
    lines, per arm its medians: ``ratio`` to the raw read, consumer process ``cpu``,
    Elasticsearch ``es``, ``span``, ``bulk``, ``wait``, and ``gains``: its rate over the
    first arm's, round by round; (anomalies, normals, rejected) of every run)."""
    raw_rate = statistics.median(messages / seconds for seconds in raw_runs)
    outcomes = {(stats.anomalies, stats.normals, stats.rejected) for arm in runs.values() for _, stats, _ in arm}
    if len(outcomes) != 1:  # an arm must change one cost, not the work
        raise SystemExit(f"--bounds: the runs routed differently (anomalies, normals, rejected): {sorted(outcomes)}")
    base_rates = [stats.messages / seconds for seconds, stats, _ in next(iter(runs.values()))]
    medians: dict[str, dict] = {}
    lines = [
        "| path | messages/s (median) | runs (messages/s) | ratio | consumer process CPU-s | Elasticsearch CPU-s "
        "| span, s | Elasticsearch bulk, s | consumer thread waiting for the writer, s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        f"| raw kafka-python read | {raw_rate:,.0f} | {', '.join(f'{messages / r:,.0f}' for r in raw_runs)} | 1.00 "
        "| | | | | |",
    ]
    for name, arm in runs.items():
        rates = [stats.messages / seconds for seconds, stats, _ in arm]
        m = medians[name] = {
            "ratio": statistics.median(rates) / raw_rate,
            "cpu": statistics.median(cpu["consumer process"] for _, _, cpu in arm),
            "es": statistics.median(cpu.get("Elasticsearch", 0.0) for _, _, cpu in arm),
            "span": statistics.median(seconds for seconds, _, _ in arm),
            "bulk": statistics.median(stats.index_s for _, stats, _ in arm),
            "wait": statistics.median(stats.wait_s for _, stats, _ in arm),
            "gains": [rate / base for rate, base in zip(rates, base_rates)],
        }
        lines.append(f"| {name} | {statistics.median(rates):,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} "
                     f"| {m['ratio']:.3f} × raw | {m['cpu']:.2f} | {m['es']:.2f} | {m['span']:.2f} | {m['bulk']:.2f} "
                     f"| {m['wait']:.2f} |")
    (outcome,) = outcomes
    return lines, medians, outcome


def _changes(gains: list[float]) -> str:
    return f"{', '.join(f'{g - 1:+.0%}' for g in gains)} run by run (median {statistics.median(gains) - 1:+.0%})"


AS_IS, HOT_PATH_FREE = "bp consume", "bp consume, parse, score and route looked up"
ES_NOT_SENT, BOTH = "bp consume, bulk requests encoded, not sent", "bp consume, both"
SPLIT = "bp consume, each bulk request sent as two at once"
SPLIT_FREE = "bp consume, looked up and two at once"


def bounds_section(messages: int, raw_runs: list[float], runs: dict[str, list]) -> list[str]:
    """The report of ``--bounds``: which of Elasticsearch's share and the consumer's own work bounds the rate."""
    table, m, (anomalies, normals, rejected) = _arms_table(messages, raw_runs, runs)
    free, alone, both, split, split_free = m[HOT_PATH_FREE], m[ES_NOT_SENT], m[BOTH], m[SPLIT], m[SPLIT_FREE]
    return [
        "",
        f"What bounds the rate: {len(raw_runs)} more rounds of a raw read, then six runs of bp consume, in an order "
        "that rotates from round to round: as is; with each batch's parse, score and route looked up instead of "
        "computed (by `route_records` itself, before the run: as if the hot path took no time, native code "
        "included; each batch is still assembled record by record); with each bulk request encoded as usual but "
        "not sent (every document counts as indexed; the archive, the dead-letter topic and the commits as usual: "
        "the consumer process on its own, as if Elasticsearch ran on another host and answered at once); with "
        "both; with each batch's bulk request sent as two requests at once, half of the documents in each "
        "(Elasticsearch indexes each request on one write thread); and with the hot path looked up and two "
        "requests at once.",
        "",
        *table,
        "",
        f"With Elasticsearch on this machine, a hot path that costs nothing takes bp consume from "
        f"{m[AS_IS]['ratio']:.3f}× to {free['ratio']:.3f}× the raw read, although the consumer process's CPU falls "
        f"from {m[AS_IS]['cpu']:.2f} to {free['cpu']:.2f} CPU-s; the rate changes by {_changes(free['gains'])}. "
        f"Elasticsearch's bulk requests then take {free['bulk']:.2f} of the {free['span']:.2f} s, and the consumer "
        f"thread waits {free['wait']:.2f} s for them. Without Elasticsearch's work, bp consume reaches "
        f"{alone['ratio']:.3f}× as is and {both['ratio']:.3f}× with a hot path that costs nothing (its process at "
        f"{alone['cpu']:.2f} and {both['cpu']:.2f} CPU-s). Every run indexed or counted {anomalies} "
        f"anomalies, archived {normals} normals and rejected {rejected}. The two runs with "
        "Elasticsearch's work bound what faster consumer code could give on this machine; the two without it, "
        f"what it could give with Elasticsearch on another host. Two bulk requests at once take bp consume to "
        f"{split['ratio']:.3f}× (Elasticsearch at {split['es']:.2f} CPU-s, its bulk requests {split['bulk']:.2f} s); "
        f"the rate changes by {_changes(split['gains'])}; with the hot path looked up as well, "
        f"{split_free['ratio']:.3f}× ({_changes(split_free['gains'])} over as is).",
    ]


def alone_section(messages: int, raw_runs: list[float], runs: dict[int, list], documents: int,
                  requests: int, as_is: list) -> list[str]:
    """The report of ``--bounds``' runs of Elasticsearch alone (``elasticsearch_alone``),
    beside ``as_is``, the same rounds' runs of bp consume."""
    raw_rate = statistics.median(messages / seconds for seconds in raw_runs)
    our_rate = statistics.median(stats.messages / seconds for seconds, stats, _ in as_is)
    lines = [
        "",
        f"Elasticsearch alone, in the same rounds, right after each raw read: the {documents} anomaly documents "
        f"of the {messages} messages, in {requests} bulk requests (one per poll of up to 5000 messages, as bp "
        "consume groups them), sent back to back by `ElasticsearchSink` into a fresh index made from the same "
        "template, with nothing else running: no Kafka read, no parse, score or route, no archive, no commit. "
        "The rate is the run's messages over that time.",
        "",
        "| bulk requests | messages/s (median) | runs (messages/s) | ratio | documents/s | Elasticsearch CPU-s "
        "| this process CPU-s | span, s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    ceilings = {}
    for in_flight, arm in runs.items():
        rates = [messages / seconds for seconds, _ in arm]
        span = statistics.median(seconds for seconds, _ in arm)
        ceilings[in_flight] = statistics.median(rates) / raw_rate
        lines.append(
            f"| {in_flight} in flight | {statistics.median(rates):,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} "
            f"| {ceilings[in_flight]:.3f} × raw | {documents / span:,.0f} "
            f"| {statistics.median(cpu.get('Elasticsearch', 0.0) for _, cpu in arm):.2f} "
            f"| {statistics.median(cpu['consumer process'] for _, cpu in arm):.2f} | {span:.2f} |")
    best = max(ceilings, key=ceilings.get)
    lines += [
        "",
        f"Indexing the anomalies alone, with {best} in flight, reaches {ceilings[best]:.3f}× the raw read of the same "
        "messages: the ceiling of any consumer that writes them to this Elasticsearch on this machine before it "
        f"commits, whatever its own code costs. bp consume, which also reads, parses, scores, routes and archives "
        f"every message on the same cores, reaches {our_rate / raw_rate:.3f}× in the same rounds: "
        f"{our_rate / raw_rate / ceilings[best]:.0%} of that ceiling.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed-style-sample", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of the raw read and ours")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs of each first (JVMs' JIT, page cache)")
    parser.add_argument("--max-warmup", type=int, default=15,
                        help="more untimed runs, up to this many in all, while Elasticsearch's JIT is still busy")
    parser.add_argument("--warm-jit-share", type=float, default=0.05,
                        help="Elasticsearch is warm when its JIT compiler used at most this share of its CPU in a run")
    parser.add_argument("--pinned", type=int, default=0, metavar="N",
                        help="then N alternating runs of each with the stack's servers pinned to the last core")
    parser.add_argument("--bounds", type=int, default=0, metavar="N",
                        help="then N rounds of a raw read, a run's bulk requests sent to Elasticsearch alone, and "
                             "ours six ways: as is, with its parse, score and route looked up, with its bulk "
                             "requests not sent, with both, with each bulk request sent as two at once, with that "
                             "and the lookup: which of them bounds the rate")
    parser.add_argument("--profile", action="store_true", help="profile one more run of ours with pyinstrument")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-consumer.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.pinned and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pinned needs at least 2 cores")

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from bp_core.settings import Settings

    for name in unpin_stack():
        print(f"{name} was still pinned to a core (an earlier --pinned run killed?): unpinned", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-"))
    run_id = uuid.uuid4().hex[:8]
    settings = Settings.from_env().with_(
        topic=f"bench-bp-{run_id}", consumer_group=f"bench-{run_id}", es_index=f"bench-anomalies-{run_id}",
        archive_dir=tmp / "archive", data_dir=tmp / "data", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    settings.data_dir.mkdir(parents=True)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(settings.topic, 3, 1), NewTopic(settings.dlq_topic, 1, 1)])
    raw_runs: list[float] = []
    native_runs: list[float] = []
    our_runs: list[tuple[float, object, dict]] = []
    pinned_raw: list[float] = []
    pinned_ours: list[tuple[float, object, dict]] = []
    bounds_raw: list[float] = []
    bounds_runs: dict[str, list] = {}
    alone_runs: dict[int, list] = {}
    bulk_documents = (0, 0)
    profiler = None
    try:
        fill_seconds = fill_topic(settings, args.messages)
        version = register_champion(settings)
        warmups, jit_share = 0, None
        while warmups < args.warmup or (warmups < args.max_warmup and jit_share is not None
                                        and jit_share > args.warm_jit_share):
            raw_read(settings, args.messages)
            _, _, _, cpu = ours(settings, False, f"warmup{warmups}", args.messages)
            warmups += 1
            jit_share = cpu[JIT] / cpu["Elasticsearch"] if cpu.get("Elasticsearch") and JIT in cpu else None
        for run in range(args.repeat):
            raw_runs.append(raw_read(settings, args.messages))
            native_runs.append(raw_read(settings, args.messages, native=True))
            seconds, stats, _, cpu = ours(settings, False, f"r{run}", args.messages)
            our_runs.append((seconds, stats, cpu))
        if args.pinned:
            with Pinned() as pinned:
                for run in range(args.pinned if pinned.failure is None else 0):
                    pinned_raw.append(raw_read(settings, args.messages))
                    seconds, stats, _, cpu = ours(settings, False, f"pinned{run}", args.messages)
                    pinned_ours.append((seconds, stats, cpu))
            if pinned.failure:
                print(f"--pinned skipped: {pinned.failure}", file=sys.stderr)
        if args.bounds:
            looked_up, not_sent = PreparePrecomputed(settings, args.messages), BulkNotSent()
            bounds_raw, bounds_runs, alone_runs = arm_rounds(settings, args.messages, args.bounds, {
                AS_IS: (), HOT_PATH_FREE: (looked_up,), ES_NOT_SENT: (not_sent,), BOTH: (looked_up, not_sent),
                SPLIT: (BulkSplit(2),), SPLIT_FREE: (looked_up, BulkSplit(2))},
                "bounds", {in_flight: functools.partial(elasticsearch_alone, settings, looked_up.bulks,
                                                        in_flight=in_flight) for in_flight in (1, 2)})
            bulk_documents = sum(map(len, looked_up.bulks)), len(looked_up.bulks)
        if args.profile:
            _, _, profiler, _ = ours(settings, True, "profiled", args.messages)
        seed_seconds, seed_done = seed_style(settings, args.seed_style_sample)
    finally:
        drop_bench_resources(settings, admin)

    raw_rates, our_rates, raw_rate, our_rate, (median_seconds, stats, cpu) = summarise(args.messages, raw_runs, our_runs)
    native_rates = [args.messages / seconds for seconds in native_runs]
    native_rate = statistics.median(native_rates)
    seed_rate = seed_done / seed_seconds
    lines = [
        "## Consumer throughput (end to end)",
        "",
        f"Command: `.venv/bin/python bench/bench_consumer.py --messages {args.messages} --repeat {args.repeat}"
        f"{f' --pinned {args.pinned}' if args.pinned else ''}{f' --bounds {args.bounds}' if args.bounds else ''}"
        f"{' --profile' if args.profile else ''}` — {machine()}; Kafka, Elasticsearch and the consumer on the same machine.",
        "",
        f"The raw read and bp consume alternate, {args.repeat} runs each, after {warmups} untimed runs of each "
        "(a freshly started Elasticsearch spends several times the CPU per document until its JIT has compiled "
        f"the indexing path: at least {args.warmup}, then until its JIT compiler used at most "
        f"{args.warm_jit_share:.0%} of its CPU in a run, at most {args.max_warmup}"
        + (f"; in the last one, {jit_share:.0%}" if jit_share is not None else "")
        + "); rates are medians, each run's rate is listed.",
        "",
        "| path | messages | messages/s (median) | runs (messages/s) | ratio |",
        "|---|---:|---:|---|---:|",
        f"| raw kafka-python read (ceiling) | {args.messages} | {raw_rate:,.0f} | "
        f"{', '.join(f'{r:,.0f}' for r in raw_rates)} | 1.00 |",
        f"| raw read, records decoded in C as bp consume decodes them | {args.messages} | {native_rate:,.0f} | "
        f"{', '.join(f'{r:,.0f}' for r in native_rates)} | {native_rate / raw_rate:.2f} × raw |",
        f"| bp consume (model v{version}, rules, ES bulk, archive fsync, commit) | {stats.messages} | {our_rate:,.0f} | "
        f"{', '.join(f'{r:,.0f}' for r in our_rates)} | {our_rate / raw_rate:.3f} × raw |",
        f"| seed-style loop (per-message predict + index) | {seed_done} | {seed_rate:,.0f} | 1 run | "
        f"{seed_rate / raw_rate:.3f} × raw |",
        "",
        f"bp consume is **{our_rate / raw_rate:.3f}×** the raw read and **{our_rate / seed_rate:.0f}×** the seed-style loop; "
        f"like for like, against the raw read with the same C record decoder, it is {our_rate / native_rate:.2f}×. "
        f"Run by run, each bp consume run against the raw read just before it: "
        f"{', '.join(f'{ours / raw:.2f}×' for raw, ours in zip(raw_rates, our_rates))} (this machine's speed drifts "
        "from one minute to the next; a raw read lasts about a second, so it is the noisier of the two). "
        f"Of {stats.messages} messages, each run: {stats.anomalies} anomalies indexed, {stats.normals} normals archived, "
        f"{stats.rejected} rejected; {stats.batches} batches. Filling the topic with `bp produce` took {fill_seconds:.1f} s.",
    ]
    lines += [
        "",
        f"Where the time goes, in the median run of bp consume ({median_seconds:.2f} s from the first batch to "
        "the last durable one). The consumer's thread polls Kafka (kafka-python's fetch, its records decoded in "
        "C), prepares each batch (parse, score, route) and waits for the batch before "
        "to be written; writer threads make each batch durable meanwhile (the archive while the bulk request is in flight):",
        "",
        "| consumer thread | seconds | of which on a CPU | writer thread | seconds |",
        "|---|---:|---:|---|---:|",
        f"| Kafka poll | {stats.poll_s:.2f} | {stats.poll_cpu_s:.2f} | Elasticsearch bulk | {stats.index_s:.2f} |",
        f"| prepare (parse, score, route) | {stats.prepare_s:.2f} | {stats.prepare_cpu_s:.2f} | "
        f"archive (write + fsync, during the bulk) | {stats.archive_s:.2f} |",
        f"| waiting for the writer | {stats.wait_s:.2f} | | dead-letter topic | {stats.dlq_s:.2f} |",
        "",
        "Of its time in a poll or preparing a batch, the consumer thread spent "
        f"{stats.poll_s + stats.prepare_s - stats.poll_cpu_s - stats.prepare_cpu_s:.2f} s off a CPU: waiting for a "
        "fetch, for kafka-python's network thread, for the GIL (held by the writer threads and kafka-python's, "
        "and taken back after each lz4 decompression, which gives it up) or for a core (Elasticsearch and the "
        "broker share them).",
    ]
    processes = {name: cpu[name] for name in ("consumer process", "Elasticsearch", "Kafka broker") if name in cpu}
    threads = {name: seconds for name, seconds in cpu.items()
               if name not in processes and name != JIT and seconds >= 0.005}
    main_thread = threads.get("MainThread", 0.0)
    lines += [
        "",
        f"CPU seconds over the same span ({os.cpu_count()} cores, so at most {os.cpu_count() * median_seconds:.2f}): "
        + ", ".join(f"{name} {seconds:.2f}" + (f" (of which its JIT compiler {cpu[JIT]:.2f})" if name == "Elasticsearch"
                                                 and JIT in cpu else "") for name, seconds in processes.items())
        + "; the consumer process "
        "by thread: " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in sorted(threads.items(), key=lambda kv: -kv[1]))
        + f". The consumer thread (MainThread: Kafka fetch, then parse, score, route) ran on a CPU "
        f"{main_thread / median_seconds:.0%} of the span, and the GIL keeps it on one core; the writer thread "
        f"waited for Elasticsearch's bulk requests {stats.index_s / median_seconds:.0%} of it. Each stage is busy "
        "most of the span, and they share the cores with Elasticsearch and the broker: the bound is CPU.",
    ]
    if len(processes) > 1:
        # The work of the run, spread perfectly over every core, still takes this long.
        floor = sum(processes.values()) / os.cpu_count()
        lines += ["", f"Together they need {sum(processes.values()):.2f} CPU-seconds: on {os.cpu_count()} cores, even "
                      f"spread perfectly, that is at least {floor:.2f} s, i.e. at most "
                      f"{args.messages / floor / raw_rate:.2f}× the raw read's median rate on this machine."]
    consumer_cpu = processes["consumer process"]
    lines += ["", f"The consumer process alone used {consumer_cpu:.2f} CPU-seconds. Its threads take turns under one "
                  "GIL, so one process needs about that long however many cores it has and wherever Elasticsearch "
                  f"runs: at most about {args.messages / consumer_cpu / raw_rate:.2f}× the raw read."]
    if pinned_ours:
        lines += pinned_section(args.messages, pinned_raw, pinned_ours)
    if bounds_runs:
        lines += bounds_section(args.messages, bounds_raw, bounds_runs)
        lines += alone_section(args.messages, bounds_raw, alone_runs, *bulk_documents, bounds_runs[AS_IS])
    if profiler:
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        lines += ["", "Profile of one more bp consume run (pyinstrument, top of the tree):", "", "```",
                  *text.splitlines()[:60], "```"]
    section = "\n".join(lines) + "\n"
    print(section)
    args.out.write_text(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
