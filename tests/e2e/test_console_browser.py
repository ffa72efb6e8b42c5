"""The web console (issue 14 item 5) in a real browser: headless Chromium from Debian with its
chromedriver, driven by selenium. Every page loads with no JavaScript error (the browser log has
no SEVERE entry) and no failed request (the performance log: no response of 400 or more, no
failed load); a topic created with the page's form is in the Kafka API's Metadata; the message
browser shows the keys and values confluent-kafka produced; a group's lag on its page is the
lag computed from the Kafka API (committed offsets against high watermarks); a reset from the
page, through its confirmation page, moves the committed offsets; a topic deleted through the
form (with the script's confirm dialog) is gone; a read-only broker shows no action form.

A screenshot of each page goes to a directory under pytest's tmp dir and is copied to
<repo>/target/console-screenshots/ for review (both paths are printed at the end).

Selenium uses the system chromedriver (/usr/bin/chromedriver, apt `chromium-driver`) and never
downloads one (SE_OFFLINE); scripts/test installs both. Without them the tests are skipped with
the reason."""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import REPO_ROOT
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
from test_console import committed, console_broker

os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not fetch a driver
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMEDRIVER is None or CHROMIUM is None,
    reason="needs chromium and chromedriver (apt install chromium chromium-driver; scripts/test does)",
)

SHOTS_OUT = REPO_ROOT / "target" / "console-screenshots"
WAIT_S = 20



@pytest.fixture(scope="module")
def shots_dir(request, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("console-screenshots")
    shutil.rmtree(SHOTS_OUT, ignore_errors=True)
    SHOTS_OUT.mkdir(parents=True, exist_ok=True)
    yield d
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown even when output is captured
        print(f"\nconsole screenshots: {SHOTS_OUT} (also {d})")


@pytest.fixture(scope="module")
def driver():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()


class Console:
    """One console in the browser: navigate, check the page loaded cleanly, screenshot it."""

    def __init__(self, driver, port: int, shots: Path, prefix: str):
        self.d, self.port, self.shots, self.prefix = driver, port, shots, prefix
        self.base = f"http://127.0.0.1:{port}"
        self.n = 0
        self.drain()

    def drain(self) -> None:
        self.d.get_log("browser")
        self.d.get_log("performance")

    def url(self, path: str) -> str:
        return self.base + path

    def open(self, path: str, shot: str, page: bool = True):
        self.d.get(self.url(path))
        return self.loaded(shot, page)

    def loaded(self, shot: str, page: bool = True):
        """After a navigation: wait for the load, then no JS error and no failed request since
        the last check; save a screenshot of the whole page."""
        WebDriverWait(self.d, WAIT_S).until(lambda d: d.execute_script("return document.readyState") == "complete")
        assert self.d.current_url.startswith(self.base), self.d.current_url
        # A page (not the chart fragment) has the stylesheet applied, not only not failed.
        assert not page or self.d.execute_script(
            "return Array.from(document.styleSheets).some(s => s.href && s.href.endsWith('/console/style.css')"
            " && s.cssRules.length > 0)"), "style.css not applied"
        self.clean()
        self.screenshot(shot)
        return self.d

    def clean(self) -> None:
        severe = [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"]
        failed = []
        for e in self.d.get_log("performance"):
            m = json.loads(e["message"])["message"]
            p = m.get("params", {})
            if m["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
                failed.append(f"{p['response']['status']} {p['response']['url']}")
            elif m["method"] == "Network.loadingFailed" and not p.get("canceled"):
                # a fetch cut short by leaving the page is canceled, not failed
                failed.append(f"{p.get('errorText')} ({p.get('type')}) request {p.get('requestId')}")
        assert not severe and not failed, (
            f"on {self.d.current_url}: browser log SEVERE {severe}, failed requests {failed}")

    def screenshot(self, name: str) -> None:
        h = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(1280, max(900, min(int(h) + 140, 6000)))
        self.n += 1
        f = self.shots / f"{self.prefix}{self.n:02d}-{name}.png"
        assert self.d.save_screenshot(str(f)), f
        shutil.copy(f, SHOTS_OUT / f.name)
        self.d.set_window_size(1280, 900)

    def css(self, sel: str):
        return self.d.find_element(By.CSS_SELECTOR, sel)

    def all(self, sel: str):
        return self.d.find_elements(By.CSS_SELECTOR, sel)

    def submit(self, form_sel: str, shot: str | None = None):
        """Click the form's submit button and wait for the page it leads to."""
        old = self.css("html")
        self.css(f"{form_sel} button[type=submit]").click()
        WebDriverWait(self.d, WAIT_S).until(EC.staleness_of(old))
        if shot:
            self.loaded(shot)


def lag_from_kafka_api(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """partition -> (committed, high watermark - committed), from Consumer.committed and
    get_watermark_offsets."""
    c = Consumer({**base_conf(bootstrap), "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        out = {}
        for tp in tps:
            assert tp.error is None, tp
            _, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10, cached=False)
            out[tp.partition] = (tp.offset, high - tp.offset)
        return out
    finally:
        c.close()


# --------------------------------------------------------------------------------------- tests


@pytest.mark.timeout(120)
def test_console_in_a_browser(broker_factory, driver, shots_dir):
    broker, port = console_broker(broker_factory)
    topic, group = "browser-t", "browser-g"
    create_topic(broker.bootstrap, topic, partitions=2)
    recs = [Rec(f"key-{i}".encode(), f"value-{i} ünïcode".encode()) for i in range(6)]
    recs.append(Rec(b"json", b'{"a": [1, 2]}', headers=(("h", b"hv"),)))
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, recs, partition=0))
    other = [Rec(None, f"p1-{i}".encode()) for i in range(4)]
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, other, partition=1,
                                           conf={"compression.type": "gzip", "linger.ms": 100}))
    # A group that committed part way and has left: lag on partition 0 and 1; reset allowed.
    c = Consumer({**base_conf(broker.bootstrap), "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 1)], asynchronous=False)
    c.close()

    ui = Console(driver, port, shots_dir, "")

    # The cluster page: this broker, the quorum, the chart, whose script refreshes it.
    ui.open("/", "cluster")
    assert ui.css("tr[data-broker='1']").text
    assert "leader 1" in ui.css("#quorum").text
    assert ui.all("div[data-refresh='/charts/throughput'] svg")
    # app.js's refresh ran a fetch of the chart and it completed (a failure would be in the log)
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(
        "return performance.getEntriesByType('resource').some(e => e.name.endsWith('/charts/throughput')"
        " && e.initiatorType === 'fetch' && e.responseEnd > 0)"))
    ui.clean()
    assert ui.all("div[data-refresh='/charts/throughput'] svg")

    # The topic list.
    ui.open("/topics", "topics")
    row = ui.css(f"tr[data-topic='{topic}']")
    assert row.get_attribute("data-partitions") == "2"
    assert [s.text for s in row.find_elements(By.CSS_SELECTOR, "span.end")] == ["0: 7", "1: 4"]

    # Create a topic through the form; the Kafka API's Metadata has it.
    ui.css("#create-topic input[name=name]").send_keys("browser-new")
    part = ui.css("#create-topic input[name=partitions]")
    part.clear()
    part.send_keys("3")
    ui.submit("#create-topic")
    WebDriverWait(driver, WAIT_S).until(EC.url_to_be(ui.url("/topics/browser-new")))
    ui.loaded("topic-created")
    assert len(ui.all("#partitions tr[data-partition]")) == 3
    wait_for(lambda: topic_partition_counts(broker.bootstrap).get("browser-new") == 3, 15, "browser-new in Metadata")

    # A topic's page, then the message browser through its form.
    ui.open(f"/topics/{topic}", "topic")
    assert [tr.find_element(By.CSS_SELECTOR, "td.end").text for tr in ui.all("#partitions tr[data-partition]")] == ["7", "4"]
    assert ui.all(f"div[data-refresh='/charts/throughput?topic={topic}'] svg")
    assert ui.css("tr[data-config='cleanup.policy']").text.split()[1] == "delete"
    Select(ui.css("select[name=partition]")).select_by_value("0")
    Select(ui.css("select#from")).select_by_value("offset")
    # app.js hides the start fields that "from" does not use: the rendering, not only the
    # attribute (style.css's display rules for form labels must not show them again).
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(
        "return document.querySelector('label[data-from=offset]').offsetParent !== null"
        " && Array.from(document.querySelectorAll('label[data-from=timestamp]'))"
        ".every(l => l.offsetParent === null)"))
    offset = ui.css("label[data-from=offset] input[name=offset]")
    offset.clear()
    offset.send_keys("0")
    ui.submit(f"form[action='/topics/{topic}/messages']", "messages")
    assert urllib.parse.urlparse(driver.current_url).path == f"/topics/{topic}/messages"
    assert not ui.all("#browse-error")
    shown = [(int(tr.get_attribute("data-offset")), tr.find_element(By.CSS_SELECTOR, "td.key").text,
              tr.find_element(By.CSS_SELECTOR, "td.value").text) for tr in ui.all("tr.record")]
    assert shown[:6] == [(i, r.key.decode(), r.value.decode()) for i, r in enumerate(recs[:6])]
    assert shown[6][:2] == (6, "json") and json.loads(shown[6][2]) == {"a": [1, 2]}
    # The other partition, gzip batches inflated, keys null.
    ui.open(f"/topics/{topic}/messages?partition=1&from=earliest&limit=100", "messages-gzip")
    assert [tr.find_element(By.CSS_SELECTOR, "td.value").text for tr in ui.all("tr.record")] == [
        r.value.decode() for r in other]

    # The chart on its own (the fragment the pages' script fetches every 3 s).
    ui.open(f"/charts/throughput?topic={topic}", "chart", page=False)
    assert len(ui.all("svg")) == 1

    # The groups list and the group's page: its lag is the Kafka API's.
    ui.open("/groups", "groups")
    assert ui.all(f"tr[data-group='{group}']")
    ui.open(f"/groups/{group}", "group")
    expect = lag_from_kafka_api(broker.bootstrap, group, topic, 2)
    assert expect == {0: (2, 5), 1: (1, 3)}
    shown = {int(tr.get_attribute("data-partition")): (int(tr.find_element(By.CSS_SELECTOR, "td.committed").text),
                                                       int(tr.find_element(By.CSS_SELECTOR, "td.lag").text))
             for tr in ui.all(f"#offsets tr[data-topic='{topic}']")}
    assert shown == expect
    assert int(ui.css("#total-lag").get_attribute("data-lag")) == sum(lag for _, lag in expect.values()) == 8

    # Reset to the start from the page: a confirmation page first, which changes nothing...
    assert "Empty" in ui.css("#group-state").text
    topic_field = ui.css("#reset-offsets input[name=topic]")
    assert topic_field.get_attribute("value") == topic
    Select(ui.css("#reset-offsets select[name=to]")).select_by_value("earliest")
    ui.submit("#reset-offsets", "reset-confirm")
    plan = {int(tr.get_attribute("data-partition")): [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in ui.all("#reset-plan tr[data-partition]")}
    assert plan == {0: ["0", "2", "0"], 1: ["1", "1", "0"]}
    assert committed(broker.bootstrap, group, topic, 0) == 2
    # ...then "Yes, reset" commits, and the Kafka API sees the new offsets.
    ui.submit("form", None)
    WebDriverWait(driver, WAIT_S).until(EC.url_to_be(ui.url(f"/groups/{group}")))
    ui.loaded("group-after-reset")
    wait_for(lambda: lag_from_kafka_api(broker.bootstrap, group, topic, 2) == {0: (0, 7), 1: (0, 4)}, 15,
             "offsets reset to the start")
    assert ui.css("#total-lag").get_attribute("data-lag") == "11"

    # Delete a topic: the form asks in the browser (app.js's confirm) and wants the name.
    ui.open("/topics/browser-new", "topic-delete")
    ui.css("#delete-topic input[name=confirm]").send_keys("browser-new")
    old = ui.css("html")
    ui.css("#delete-topic button[type=submit]").click()
    alert = WebDriverWait(driver, WAIT_S).until(EC.alert_is_present())
    assert "browser-new" in alert.text
    alert.accept()
    WebDriverWait(driver, WAIT_S).until(EC.staleness_of(old))
    WebDriverWait(driver, WAIT_S).until(EC.url_to_be(ui.url("/topics")))
    ui.loaded("topic-deleted")
    wait_for(lambda: "browser-new" not in topic_partition_counts(broker.bootstrap), 15, "browser-new deleted")


@pytest.mark.timeout(90)
def test_console_read_only_in_a_browser(broker_factory, driver, shots_dir):
    broker, port = console_broker(broker_factory, extra_args=["--http-read-only"])
    topic, group = "browser-ro", "browser-ro-g"
    create_topic(broker.bootstrap, topic, partitions=1)
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, [Rec(b"k", b"v")]))
    c = Consumer({**base_conf(broker.bootstrap), "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    c.close()
    assert watermarks(broker.bootstrap, topic, 0)[1] == 1

    ui = Console(driver, port, shots_dir, "ro-")
    for path, shot in (("/", "cluster"), ("/topics", "topics"), (f"/topics/{topic}", "topic"),
                       (f"/topics/{topic}/messages?partition=0&from=earliest", "messages"),
                       ("/groups", "groups"), (f"/groups/{group}", "group")):
        ui.open(path, shot)
        assert "read-only" in ui.css("span.node").text, path
        posts = [f.get_attribute("id") for f in ui.all("form") if (f.get_attribute("method") or "").lower() == "post"]
        assert not posts, (path, posts)
        for sel in ("#create-topic", "#add-partitions", "#delete-topic", "#reset-offsets"):
            with pytest.raises(NoSuchElementException):
                ui.css(sel)
        if shot == "messages":  # reading still works
            assert [(tr.find_element(By.CSS_SELECTOR, "td.key").text, tr.find_element(By.CSS_SELECTOR, "td.value").text)
                    for tr in ui.all("tr.record")] == [("k", "v")]
        if shot == "group":
            assert ui.css("#total-lag").get_attribute("data-lag") == "1"
