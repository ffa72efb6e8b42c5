"""The web console on the HTTP listener (issue 14 item 5), read with plain urllib and parsed with
html.parser: topic list and topic page against the Kafka API's watermarks, the message browser
against records produced by confluent-kafka (plain, gzip and zstd batches, headers, a hostile
value), the throughput charts against /metrics, group lag after a partial commit, bad parameters;
the actions (create and delete topic,
add partitions, offset reset with its confirmation and its refusal while a member is active)
checked through confluent-kafka's AdminClient and Consumer; cross-site POSTs and read-only mode
refused."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

from confluent_kafka import Consumer, TopicPartition

from conftest import Broker, free_port
from e2e_util import (
    Rec,
    assert_all_delivered,
    base_conf,
    create_topic,
    produce_confluent,
    topic_partition_counts,
    wait_for,
    watermarks,
)

HOSTILE = b"<script>alert('x')</script><img src=x onerror=alert(1)>"


# ---------------------------------------------------------------------------------------- HTML


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list["Node"]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if ((tag is None or c.tag == tag) and (cls is None or cls in c.classes())
                        and all(c.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())):
                    out.append(c)
                out.extend(c.all(tag, cls, **attrs))
        return out

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> "Node":
        found = self.all(tag, cls, **attrs)
        assert len(found) == 1, f"expected one <{tag} {cls} {attrs}>, found {len(found)}"
        return found[0]


VOID = {"meta", "link", "input", "br", "img", "hr"}


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        n = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(n)
        if tag not in VOID:
            self.cur = n

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str) -> Node:
    b = TreeBuilder()
    b.feed(html)
    b.close()
    return b.root


def get(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def page(port: int, path: str) -> tuple[str, Node]:
    status, body, headers = get(port, path)
    assert status == 200, (path, status, body)
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    return body, parse(body)


def post(port: int, path: str, fields: dict, origin: str | None = "same") -> tuple[int, str, str]:
    """POSTs a form as a browser on the console's page would (Origin = this console), or with
    another `origin`, or none. Returns (status, body, final URL after redirects)."""
    headers = {}
    if origin == "same":
        headers["Origin"] = f"http://127.0.0.1:{port}"
    elif origin is not None:
        headers["Origin"] = origin
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=urllib.parse.urlencode(fields).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=40) as r:
            return r.status, r.read().decode(), r.geturl()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.geturl()


def token(port: int) -> str:
    _, doc = page(port, "/topics")
    return doc.one("form", id="create-topic").one("input", name="token").attrs["value"]


def console_broker(broker_factory, extra_args: list[str] | None = None, **settings):
    port = free_port()
    broker = broker_factory({"http.listen": f"127.0.0.1:{port}", **settings}, start=False)
    if extra_args:
        broker.command = lambda: Broker.command(broker) + extra_args
    broker.start()
    wait_for(lambda: get(port, "/health/ready")[0] == 200, 30, "ready")
    return broker, port


def committed(bootstrap: str, group: str, topic: str, partition: int) -> int:
    c = Consumer({**base_conf(bootstrap), "group.id": group, "enable.auto.commit": False})
    try:
        return c.committed([TopicPartition(topic, partition)], timeout=10)[0].offset
    finally:
        c.close()


def browse(port: int, topic: str, **q) -> list[dict]:
    """The message browser's records: offset, key, value, headers (text as shown), codec."""
    _, doc = page(port, f"/topics/{topic}/messages?" + urllib.parse.urlencode(q))
    assert not doc.all(id="browse-error"), doc.one(id="browse-error").text()
    out = []
    for tr in doc.all("tr", cls="record"):
        tds = tr.all("td")
        out.append({
            "offset": int(tr.attrs["data-offset"]),
            "key": tr.one("td", cls="key").text(),
            "value": tr.one("td", cls="value").text(),
            "value_kind": (tr.one("td", cls="value").all("pre") or [Node("x", {}, None)])[0].attrs.get("data-kind"),
            "headers": [d.text() for d in tr.all("div", cls="header")],
            "codec": tds[-1].text(),
        })
    return out


# --------------------------------------------------------------------------------------- tests


def test_console_pages_show_what_the_kafka_api_sees(broker_factory):
    broker, port = console_broker(broker_factory)
    topic = "console-t"
    create_topic(broker.bootstrap, topic, partitions=3)
    plain = [Rec(f"k{i}".encode(), f"v{i}".encode()) for i in range(5)]
    plain.append(Rec(b"hk", b"with-headers", headers=(("h1", b"hv1"), ("h2", b"{\"j\": 2}"))))
    plain.append(Rec(b"evil", HOSTILE))
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, plain, partition=0))
    gz = [Rec(None, f"gzip-{i}".encode() * 3) for i in range(10)]
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, gz, partition=1,
                                           conf={"compression.type": "gzip", "linger.ms": 200}))
    base_ts = 1_700_000_000_000
    zs = [Rec(b"z", f"{{\"n\": {i}}}".encode(), timestamp=base_ts + i * 1000) for i in range(6)]
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, zs, partition=2,
                                           conf={"compression.type": "zstd", "linger.ms": 200}))
    ends = {p: watermarks(broker.bootstrap, topic, p)[1] for p in range(3)}
    assert ends == {0: 7, 1: 10, 2: 6}

    # The topic list: partition count and each partition's end offset.
    _, doc = page(port, "/topics")
    row = doc.one("tr", data_topic=topic)
    assert row.attrs["data-partitions"] == "3"
    for p, end in ends.items():
        assert row.one("span", cls="end", data_partition=str(p)).text() == f"{p}: {end}"

    # The topic page: partitions with leader, replicas, ISR, offsets; and its configs.
    _, doc = page(port, f"/topics/{topic}")
    for p, end in ends.items():
        tr = doc.one("tr", data_partition=str(p))
        assert tr.one("td", cls="end").text() == str(end)
        assert tr.one("td", cls="start").text() == "0"
        cells = [td.text() for td in tr.all("td")]
        assert cells[1] == "1" and cells[3] == "1" and cells[4] == "1", cells  # leader, replicas, ISR
    assert doc.one("tr", data_config="cleanup.policy").all("td")[1].text() == "delete"

    # The message browser: exactly the records asked for.
    got = browse(port, topic, partition=0, **{"from": "offset"}, offset=2, limit=3)
    assert [(r["offset"], r["key"], r["value"]) for r in got] == [(2, "k2", "v2"), (3, "k3", "v3"), (4, "k4", "v4")]
    got = browse(port, topic, partition=0, **{"from": "offset"}, offset=5, limit=100)
    assert [r["offset"] for r in got] == [5, 6]
    assert got[0]["headers"] == ["h1 = hv1", 'h2 = {\n  "j": 2\n}']
    # The hostile value is shown as text, and is text in the page, not markup.
    assert got[1]["value"] == HOSTILE.decode()
    raw = get(port, f"/topics/{topic}/messages?partition=0&from=offset&offset=6")[1]
    assert "<script>alert" not in raw and "<img src=x" not in raw
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in raw
    assert raw.count("<script") == 1  # the embedded app.js only
    # Hex on request.
    got = browse(port, topic, partition=0, **{"from": "offset"}, offset=0, limit=1, format="hex")
    assert got[0]["value"] == "76 30" and got[0]["value_kind"] == "hex"

    # Compressed batches are inflated.
    got = browse(port, topic, partition=1, limit=100)
    assert [r["value"] for r in got] == [r.value.decode() for r in gz]
    assert {r["codec"] for r in got} == {"gzip"}
    got = browse(port, topic, partition=2, **{"from": "timestamp"}, timestamp=base_ts + 3000, limit=2, format="json")
    assert [(r["offset"], r["value"]) for r in got] == [(3, '{\n  "n": 3\n}'), (4, '{\n  "n": 4\n}')]
    assert {r["codec"] for r in got} == {"zstd"}
    got = browse(port, topic, partition=2, **{"from": "latest"}, limit=2)
    assert [r["offset"] for r in got] == [4, 5]

    # Bad parameters: a 400 with one line, never a page or a crash.
    for path in (f"/topics/{topic}/messages?limit=101", f"/topics/{topic}/messages?partition=x",
                 f"/topics/{topic}/messages?from=offset", f"/topics/{topic}/messages?bogus=1",
                 f"/topics/{topic}/messages?partition=9", "/topics/bad%20name", "/topics?x=1"):
        status, body, _ = get(port, path)
        assert status == 400, (path, status, body)
        assert body.endswith("\n") and body.count("\n") == 1, body
    assert get(port, "/topics/no-such-topic")[0] == 404
    assert get(port, "/topics/no-such-topic/messages")[0] == 404

    # The cluster page: this broker, and the quorum it leads.
    _, doc = page(port, "/")
    assert doc.one("tr", data_broker="1").all("td")[4].text() == "active"
    assert "leader 1" in doc.one(id="quorum").text()

    # Assets are embedded.
    for path, kind in (("/console/style.css", "text/css"), ("/console/app.js", "text/javascript")):
        status, body, headers = get(port, path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body

    # Throughput charts from the broker's own samples: over the window, the chart's bytes in for
    # the topic add up to the topic's bytes-in counter in /metrics once a sample follows the
    # produce.
    def bytes_in_metric() -> int:
        text = get(port, "/metrics")[1]
        m = re.search(r'^kafka_server_brokertopicmetrics_bytesin_total\{topic="console-t"\} (\S+)$', text, re.M)
        return int(float(m.group(1)))

    produced = bytes_in_metric()
    assert produced > 0

    def chart(q: str) -> Node:
        status, body, _ = get(port, "/charts/throughput" + q)
        assert status == 200, body
        return parse(body).one("svg")

    def sampled():
        svg = chart(f"?topic={topic}")
        return int(svg.attrs["data-total-in"]) == produced and int(svg.attrs["data-intervals"]) >= 2

    wait_for(sampled, 30, "two intervals, the last after the produce")
    assert len(chart(f"?topic={topic}").all("polyline")) == 2
    _, doc = page(port, "/topics")
    assert float(doc.one("tr", data_topic=topic).one("td", cls="rate").text()) >= 0  # sampled, not "—"
    assert int(chart("").attrs["data-total-in"]) >= produced
    assert get(port, "/charts/throughput?topic=bad%20name")[0] == 400
    _, doc = page(port, f"/topics/{topic}")
    assert doc.one("div", data_refresh=f"/charts/throughput?topic={topic}").all("svg")
    _, doc = page(port, "/")
    assert doc.one("div", data_refresh="/charts/throughput").all("svg")

    # A group with a member that committed part way: lag per partition and in total.
    group = "console-g"
    c = Consumer({**base_conf(broker.bootstrap), "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        wait_for(lambda: c.poll(0.2) is not None or bool(c.assignment()), 30, "assignment")
        c.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 10)], asynchronous=False)
        _, doc = page(port, f"/groups/{urllib.parse.quote(group)}")
        assert "Stable" in doc.one(id="group-state").text()
        members = doc.one("table", id="members").all("tr")[1:]
        assert len(members) == 1
        assert members[0].all("td")[4].text() == f"{topic}: 0, 1, 2"
        lag = {int(tr.attrs["data-partition"]): (int(tr.one("td", cls="committed").text()),
                                                 int(tr.one("td", cls="lag").text()))
               for tr in doc.all("tr", data_topic=topic)}
        assert lag == {0: (3, 4), 1: (10, 0)}
        assert doc.one(id="total-lag").attrs["data-lag"] == "4"
        _, doc = page(port, "/groups")
        assert doc.one("tr", data_group=group).all("td")[4].text() == "1"
    finally:
        c.close()
    assert get(port, "/groups/no%0Agroup")[0] == 400


def test_console_actions_go_through_the_kafka_api(broker_factory):
    broker, port = console_broker(broker_factory)
    tok = token(port)

    # Create, through the page's form; the Kafka API sees it.
    status, body, url = post(port, "/topics", {"token": tok, "name": "console-new", "partitions": "2"})
    assert status == 200 and url.endswith("/topics/console-new"), (status, body)
    assert topic_partition_counts(broker.bootstrap).get("console-new") == 2
    assert post(port, "/topics", {"token": tok, "name": "console-new", "partitions": "1"})[0] == 409
    assert post(port, "/topics", {"token": tok, "name": "bad name"})[0] == 400
    assert post(port, "/topics", {"token": tok, "name": "x", "partitions": "0"})[0] == 400

    # Cross-site POSTs are refused and change nothing: another Origin, no Origin, no token.
    for fields, origin in (({"token": tok, "name": "evil"}, "http://evil.example"),
                           ({"token": tok, "name": "evil"}, None),
                           ({"name": "evil"}, "same"),
                           ({"token": "0" * 32, "name": "evil"}, "same")):
        status, body, _ = post(port, "/topics", fields, origin=origin)
        assert status == 403 and body.startswith("cross-site check"), (origin, status, body)
    assert "evil" not in topic_partition_counts(broker.bootstrap)

    # Add partitions (a new total), then shrinking is refused as Kafka refuses it.
    status, _, url = post(port, "/topics/console-new/partitions", {"token": tok, "count": "4"})
    assert status == 200 and url.endswith("/topics/console-new")
    assert topic_partition_counts(broker.bootstrap)["console-new"] == 4
    status, body, _ = post(port, "/topics/console-new/partitions", {"token": tok, "count": "2"})
    assert status == 400 and "InvalidPartitions" in body, body
    _, doc = page(port, "/topics")
    assert doc.one("tr", data_topic="console-new").attrs["data-partitions"] == "4"

    # Delete: the form must repeat the name.
    assert post(port, "/topics/console-new/delete", {"token": tok, "confirm": "other"})[0] == 400
    assert "console-new" in topic_partition_counts(broker.bootstrap)
    status, _, url = post(port, "/topics/console-new/delete", {"token": tok, "confirm": "console-new"})
    assert status == 200 and url.endswith("/topics")
    wait_for(lambda: "console-new" not in topic_partition_counts(broker.bootstrap), 15, "topic gone")
    assert post(port, "/topics/console-new/delete", {"token": tok, "confirm": "console-new"})[0] == 404

    # Offset reset: refused while a member is active, confirmed, then applied.
    topic, group = "console-r", "console-rg"
    create_topic(broker.bootstrap, topic, partitions=1)
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, [Rec(None, b"r%d" % i) for i in range(10)]))
    c = Consumer({**base_conf(broker.bootstrap), "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    wait_for(lambda: c.poll(0.2) is not None or bool(c.assignment()), 30, "assignment")
    c.commit(offsets=[TopicPartition(topic, 0, 8)], asynchronous=False)
    try:
        _, doc = page(port, f"/groups/{group}")
        assert not doc.all("form", id="reset-offsets") and doc.all(id="reset-unavailable")
        for fields in ({"token": tok, "topic": topic, "to": "earliest"},
                       {"token": tok, "topic": topic, "confirm": "yes", "offsets": "0:0"}):
            status, body, _ = post(port, f"/groups/{group}/reset", fields)
            assert status == 409 and "active member" in body, (status, body)
        assert committed(broker.bootstrap, group, topic, 0) == 8
    finally:
        c.close()
    _, doc = page(port, f"/groups/{group}")
    assert "Empty" in doc.one(id="group-state").text()
    form = doc.one("form", id="reset-offsets")
    assert form.one("input", name="token").attrs["value"] == tok
    # The first step only asks.
    status, body, _ = post(port, f"/groups/{group}/reset", {"token": tok, "topic": topic, "to": "offset", "offset": "3"})
    assert status == 200, body
    plan = parse(body).one("tr", data_partition="0").all("td")
    assert [td.text() for td in plan] == ["0", "8", "3"]
    assert committed(broker.bootstrap, group, topic, 0) == 8
    confirm = {i.attrs["name"]: i.attrs["value"] for i in parse(body).one("form").all("input")}
    assert confirm["offsets"] == "0:3" and confirm["confirm"] == "yes"
    status, _, url = post(port, f"/groups/{group}/reset", confirm)
    assert status == 200 and url.endswith(f"/groups/{group}")
    assert committed(broker.bootstrap, group, topic, 0) == 3
    _, doc = page(port, f"/groups/{group}")
    assert doc.one("tr", data_topic=topic, data_partition="0").one("td", cls="lag").text() == "7"
    # Earliest and latest compute from the log; an unknown topic is refused.
    status, body, _ = post(port, f"/groups/{group}/reset", {"token": tok, "topic": topic, "to": "latest"})
    assert [td.text() for td in parse(body).one("tr", data_partition="0").all("td")] == ["0", "3", "10"]
    assert post(port, f"/groups/{group}/reset", {"token": tok, "topic": "nope", "to": "latest"})[0] == 404
    assert post(port, "/groups/no-such-group/reset", {"token": tok, "topic": topic})[0] == 404


def test_console_read_only_refuses_every_action(broker_factory):
    broker, port = console_broker(broker_factory, extra_args=["--http-read-only"])
    create_topic(broker.bootstrap, "console-ro", partitions=1)
    c = Consumer({**base_conf(broker.bootstrap), "group.id": "console-ro-g", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("console-ro", 0, 0)], asynchronous=False)
    c.close()
    # No action is rendered...
    for path in ("/topics", "/topics/console-ro", "/groups/console-ro-g"):
        body, doc = page(port, path)
        assert not doc.all("form", method="post"), path
        assert "read-only" in doc.one("span", cls="node").text()
    # ...and every action is refused, with a token-less form as with any other.
    for path, fields in (("/topics", {"name": "ro-new"}),
                         ("/topics/console-ro/delete", {"confirm": "console-ro"}),
                         ("/topics/console-ro/partitions", {"count": "3"}),
                         ("/groups/console-ro-g/reset", {"topic": "console-ro", "confirm": "yes", "offsets": "0:0"})):
        status, body, _ = post(port, path, fields)
        assert status == 403 and "read-only" in body, (path, status, body)
    counts = topic_partition_counts(broker.bootstrap)
    assert counts.get("console-ro") == 1 and "ro-new" not in counts
