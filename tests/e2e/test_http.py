"""The HTTP listener of `vltava serve`: health endpoints, /metrics after a known workload (parsed
by Prometheus's own parser), and JSON log lines."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port
from e2e_util import Rec, assert_all_delivered, consume_confluent, create_topic, produce_confluent, wait_for


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


def log_bytes(broker, topic: str) -> int:
    return sum(p.stat().st_size for p in broker.data_dir.glob(f"{topic}-*/*.log"))


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
