"""The HTTP listener of `vltava serve`: health endpoints, /metrics after a known workload (parsed
by Prometheus's own parser), and JSON log lines."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from conftest import REPO_ROOT, free_port
from e2e_util import (
    Rec,
    admin_client,
    assert_all_delivered,
    base_conf,
    consume_confluent,
    create_topic,
    produce_confluent,
    wait_for,
    watermarks,
)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(port: int) -> dict[tuple[str, tuple], float]:
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def log_bytes(broker, topic: str, partition: str = "*") -> int:
    return sum(p.stat().st_size for p in broker.data_dir.glob(f"{topic}-{partition}/*.log"))


def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commits `offsets` for `group` without joining it (a simple consumer's commit)."""
    c = Consumer({**base_conf(bootstrap), "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "vltava.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                "unless", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana `label_values(metric, label)` query) reads."""
    m = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)[^,]*,.*\)\s*", expr)
    if m:
        return {m.group(1)}
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\boffset\s+-?\w+", "", e)  # offset modifiers
    e = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b", "", e)  # numbers
    names = set()
    for t in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[t.end():].lstrip().startswith("(") or t.group() in PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        names.add(t.group())
    return names


def dashboard_queries() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(d["panels"])
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if v.get("type") == "query":
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def test_promql_metric_names_are_found_in_expressions():
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (request, le) (rate(a_bucket{instance=~"$i",x!="y{z}"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert promql_metric_names("sum(rate(a_total[5m])) / on (x) group_left b + 1e3 * c offset 5m") == {"a_total", "b", "c"}
    assert promql_metric_names("label_values(m_count, instance)") == {"m_count"}
    names = set().union(*map(promql_metric_names, dashboard_queries()))
    for wanted in ("kafka_server_brokertopicmetrics_bytesin_total", "kafka_network_requestmetrics_totaltimems_bucket",
                   "kafka_server_replicamanager_isrshrinks_total", "kafka_consumergroup_lag",
                   "process_resident_memory_bytes"):
        assert wanted in names, (wanted, names)


def assert_dashboard_reads_only_exported_names(m) -> None:
    """Every metric the dashboard's queries read has a sample in the broker's /metrics `m`."""
    exported = {name for name, _ in m}
    for expr in dashboard_queries():
        missing = promql_metric_names(expr) - exported
        assert not missing, f"{DASHBOARD.name}: {expr!r} reads {sorted(missing)}, not in /metrics"


def test_health_metrics_after_a_known_workload_and_json_logs(broker_factory):
    port = free_port()
    broker = broker_factory({"http.listen": f"127.0.0.1:{port}", "log.format": "json"})
    assert http_get(port, "/health/live")[0] == 200
    wait_for(lambda: http_get(port, "/health/ready") == (200, "ready\n"), 30, "ready")
    before = samples(port)

    topic = "http-metrics"
    create_topic(broker.bootstrap, topic, partitions=3)
    records = [Rec(f"k{i}".encode(), f"value-{i}".encode() * 5) for i in range(300)]
    # No retries and no idempotence: every batch the producer sends is appended exactly once.
    results = produce_confluent(broker.bootstrap, topic, records, conf={"enable.idempotence": False, "retries": 0})
    assert_all_delivered(results)
    got = consume_confluent(broker.bootstrap, topic, range(3), expected=len(records))
    assert len(got) == len(records)

    m = samples(port)
    stored = log_bytes(broker, topic)
    assert value(m, "kafka_server_brokertopicmetrics_messagesin_total", topic=topic) == len(records)
    # Batches are stored byte for byte as received, so bytes in equal the log files' size.
    assert value(m, "kafka_server_brokertopicmetrics_bytesin_total", topic=topic) == stored
    assert value(m, "kafka_server_brokertopicmetrics_bytesout_total", topic=topic) >= stored
    assert value(m, "kafka_server_brokertopicmetrics_messagesin_total") >= len(records)

    def requests(m, request):
        return sum(v for (n, labels), v in m.items()
                   if n == "kafka_network_requestmetrics_requests_total" and dict(labels).get("request") == request)

    for api in ("Produce", "FetchConsumer", "Metadata", "CreateTopics"):
        assert requests(m, api) > requests(before, api), api
    assert value(m, "kafka_network_requestmetrics_totaltimems_count", request="Produce") >= requests(m, "Produce") - 1
    assert value(m, "kafka_server_replicamanager_leadercount") >= 3
    assert value(m, "kafka_server_replicamanager_partitioncount") >= 3
    assert value(m, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert value(m, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert ("kafka_server_socket_server_metrics_connection_count", (("listener", "PLAINTEXT"),)) in m

    # Log size and offsets per partition: the .log files' bytes, 0 .. the records produced there.
    for p in range(3):
        labels = {"topic": topic, "partition": str(p)}
        low, high = watermarks(broker.bootstrap, topic, p)
        assert (low, high) != (0, 0), "the keys spread over every partition"
        assert value(m, "kafka_log_log_size", **labels) == log_bytes(broker, topic, str(p)), p
        assert value(m, "kafka_log_log_logstartoffset", **labels) == 0
        assert value(m, "kafka_log_log_logendoffset", **labels) == high
    assert sum(value(m, "kafka_log_log_logendoffset", topic=topic, partition=str(p)) for p in range(3)) == len(records)

    # A group that committed part way: lag = produced - committed, per partition it committed.
    group = "http-lag"
    ends = {p: watermarks(broker.bootstrap, topic, p)[1] for p in range(3)}
    committed = {0: ends[0] // 2, 1: ends[1]}
    commit(broker.bootstrap, group, topic, committed)
    m = samples(port)
    for p, off in committed.items():
        labels = {"consumergroup": group, "topic": topic, "partition": str(p)}
        assert value(m, "kafka_consumergroup_current_offset", **labels) == off
        assert value(m, "kafka_consumergroup_lag", **labels) == ends[p] - off
    assert ("kafka_consumergroup_lag", (("consumergroup", group), ("partition", "2"), ("topic", topic))) not in m
    assert value(m, "kafka_consumergroup_lag_sum", consumergroup=group, topic=topic) == ends[0] - committed[0]
    # After this workload every series the dashboard reads exists.
    assert_dashboard_reads_only_exported_names(m)

    # Process memory from /proc, and the fsyncs the metadata log and checkpoints did.
    assert value(m, "process_resident_memory_bytes") > 1 << 20
    assert value(m, "kafka_log_logflushstats_logflushrateandtimems_count") > 0
    assert value(m, "kafka_log_logflushstats_logflushrateandtimems_count") == value(
        m, "kafka_log_logflushstats_logflushrateandtimems_bucket", le="+Inf")
    assert value(m, "kafka_server_replicamanager_isrshrinks_total") == 0
    assert value(m, "kafka_server_replicamanager_isrexpands_total") == 0

    # A consumer waiting at the end of a partition parks its fetch (the fetch purgatory).
    purgatory = "kafka_server_delayedoperationpurgatory_purgatorysize"
    assert value(m, purgatory, delayedoperation="Produce") == 0
    idle = Consumer({**base_conf(broker.bootstrap), "group.id": "http-idle", "fetch.wait.max.ms": 10000})
    try:
        idle.assign([TopicPartition(topic, 0, ends[0])])
        idle.poll(0.1)
        wait_for(lambda: value(samples(port), purgatory, delayedoperation="Fetch") >= 1, 30, "a parked fetch")
    finally:
        idle.close()

    broker.stop()
    lines = [l for l in broker.stderr_tail(limit=10**7).splitlines() if l.strip() and not l.startswith("--- ")]
    parsed = [json.loads(l) for l in lines]
    for p in parsed:
        assert {"timestamp", "level", "target", "message"} <= p.keys(), p
    assert any(p.get("message", "").startswith("HTTP listener started") and p.get("http") == f"127.0.0.1:{port}"
               for p in parsed)


def test_an_explicit_http_port_in_use_fails_the_start_and_none_turns_it_off(broker_factory):
    import socket
    import subprocess
    from conftest import vltava_bin

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    taken = s.getsockname()[1]
    try:
        r = subprocess.run(
            [str(vltava_bin()), "serve", "--listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{taken}",
             "--data-dir", str(broker_factory.base / "taken")],
            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "RUST_LOG": "error"},
        )
        assert r.returncode == 1, r.stderr
        assert f"127.0.0.1:{taken}" in r.stderr and "http.listen" in r.stderr, r.stderr
    finally:
        s.close()
    broker = broker_factory({"http.listen": "none"})
    assert "HTTP listener started" not in broker.stderr_tail()


def test_isr_shrink_and_expand_counted_by_the_leader_when_a_follower_dies_and_returns(tmp_path_factory, request):
    from test_cluster import Cluster, print_logs_if_failed

    c = Cluster(tmp_path_factory.mktemp("isr"))
    http = {i: free_port() for i in c.nodes}
    for i, b in c.nodes.items():
        # A killed broker is fenced (and leaves the ISR) within ~3 s.
        b.settings.update({"http.listen": f"127.0.0.1:{http[i]}", "broker.session.timeout.ms": 3000,
                           "broker.heartbeat.interval.ms": 500})
    try:
        c.start()
        topic = "http-isr"
        admin = admin_client(c.bootstrap(1))
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])[topic].result(timeout=30)

        def state(via: int = 1):
            md = admin_client(c.bootstrap(via)).list_topics(topic, timeout=10).topics[topic]
            p = md.partitions.get(0) if md.error is None else None
            return (p.leader, sorted(p.isrs)) if p is not None else (-1, [])

        wait_for(lambda: state()[0] > 0 and state()[1] == [1, 2, 3], 60, "the partition with its full ISR")
        leader = state()[0]
        shrinks = "kafka_server_replicamanager_isrshrinks_total"
        expands = "kafka_server_replicamanager_isrexpands_total"
        before = samples(http[leader])
        assert value(before, "kafka_server_replicamanager_underreplicatedpartitions") == 0
        # Kill a follower that is not the active controller, so the quorum does not re-elect.
        active = c.active_controller()
        victim = next(i for i in c.nodes if i not in (leader, active))
        c.nodes[victim].kill()
        # Every partition the leader leads with the victim in its ISR shrinks (__consumer_offsets'
        # too): at least ours.
        wait_for(lambda: value(samples(http[leader]), shrinks) > value(before, shrinks), 60,
                 f"the leader {leader} to count the ISR shrink of broker {victim}")
        wait_for(lambda: victim not in state(leader)[1], 30, f"broker {victim} out of the ISR")
        m = samples(http[leader])
        assert value(m, "kafka_server_replicamanager_underreplicatedpartitions") >= 1
        c.nodes[victim].start(timeout=60)
        wait_for(lambda: state(leader) == (leader, [1, 2, 3]), 60, f"broker {victim} back in the ISR")
        wait_for(lambda: value(samples(http[leader]), expands) > value(m, expands), 30,
                 f"the leader {leader} to count broker {victim} rejoining the ISR")
        wait_for(lambda: value(samples(http[leader]), "kafka_server_replicamanager_underreplicatedpartitions") == 0,
                 60, "no partition under-replicated")
    finally:
        print_logs_if_failed(request, c.nodes.values())
        c.close()
