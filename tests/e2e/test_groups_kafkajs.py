"""kafkajs 2.2.4 group consumers (node/group_member.js; non-flexible versions: JoinGroup v5, SyncGroup v3,
Heartbeat v3, LeaveGroup v3, OffsetCommit v5, OffsetFetch v4): two members split the partitions and read
everything, committing after each batch; after both leave, a restarted member resumes exactly at the
committed offsets."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from e2e_util import NODE_DIR, create_topic, node_path, wait_for
from group_util import GROUP_SETTINGS, check_partitioning, committed_offsets, produce_to_partitions


class NodeMember:
    def __init__(self, name: str, bootstrap: str, group: str, topic: str, workdir: Path):
        if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
            pytest.fail(f"kafkajs is not installed in {NODE_DIR}: run `npm ci` there (scripts/test does)")
        self.name = name
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.stderr_path = workdir / f"kafkajs-{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [node_path(), str(NODE_DIR / "group_member.js"), bootstrap, group, topic, name],
            cwd=NODE_DIR,
            env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(obj)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.events)

    def owned(self) -> set[int]:
        joins = [e for e in self.snapshot() if e["ev"] == "joined"]
        return set(joins[-1]["parts"]) if joins else set()

    def records(self) -> list[tuple[int, int, str | None]]:
        return [(e["p"], e["o"], e["v"]) for e in self.snapshot() if e["ev"] == "msg"]

    def check(self) -> bool:
        crashes = [e["error"] for e in self.snapshot() if e["ev"] == "crash"]
        assert not crashes, f"kafkajs member {self.name} crashed: {crashes[0][:2000]}"
        assert self.proc.poll() is None, f"kafkajs member {self.name} exited {self.proc.returncode}:\n{self.stderr_tail()}"
        return True

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int:
        try:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"kafkajs member {self.name} did not stop within {timeout}s\n{self.stderr_tail()}")
        self._reader.join(timeout=5)
        return code

    def ensure_dead(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()


def _wait_read(members, keys, timeout, desc):
    """Wait until `members` together read every (partition, offset) of `keys`; on timeout say what is missing."""
    keys = set(keys)

    def cond():
        for m in members:
            m.check()
        return {(p, o) for m in members for (p, o, _v) in m.records()} >= keys

    try:
        wait_for(cond, timeout, desc)
    except AssertionError as exc:
        have = {(p, o) for m in members for (p, o, _v) in m.records()}
        missing = sorted(keys - have)
        detail = "\n".join(f"{m.name}: {[e for e in m.snapshot() if e['ev'] not in ('msg', 'commit')][-5:]}" for m in members)
        raise AssertionError(f"{exc}\nmissing {len(missing)}: {missing[:12]}\n{detail}") from None


def _wait_split(members, partitions, timeout, desc, stable_for=1.0):
    deadline = time.monotonic() + timeout
    since = None
    while True:
        for m in members:
            m.check()
        owned = {m.name: m.owned() for m in members}
        problem = check_partitioning(owned, partitions)
        now = time.monotonic()
        if problem is None:
            since = since or now
            if now - since >= stable_for:
                return owned
        else:
            since = None
        if now >= deadline:
            raise AssertionError(f"timed out waiting for {desc}: {problem}; {owned}")
        time.sleep(0.1)


@pytest.mark.timeout(150)
def test_kafkajs_group_split_commit_restart_resume(broker_factory, tmp_path):
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    topic = group = "kafkajs-group"
    create_topic(bs, topic, 4)
    where = produce_to_partitions(bs, topic, {p: 50 for p in range(4)})

    a = NodeMember("a", bs, group, topic, tmp_path)
    b = NodeMember("b", bs, group, topic, tmp_path)
    members = [a, b]
    try:
        owned = _wait_split(members, range(4), 60, "two kafkajs members to split 4 partitions")
        assert sorted(len(p) for p in owned.values()) == [2, 2], owned
        _wait_read(members, where, 60, "reading all 200 records")
        wait_for(lambda: committed_offsets(bs, group, topic, range(4)) == {p: 50 for p in range(4)}, 30, "commits of everything")
        for m in members:
            for p, o, v in m.records():
                assert where[(p, o)] == v.encode("latin-1"), f"{m.name}: record {p}/{o} differs"

        # b leaves (LeaveGroup): a takes over everything and reads what comes next
        assert b.stop() == 0, f"kafkajs member b did not stop cleanly:\n{b.stderr_tail()}"
        _wait_split([a], range(4), 45, "a to own all 4 partitions after b left", stable_for=0.5)
        solo = produce_to_partitions(bs, topic, {p: 5 for p in range(4)}, prefix="solo")
        where.update(solo)
        _wait_read([a], solo, 45, "a to read the records produced while alone")
        wait_for(lambda: committed_offsets(bs, group, topic, range(4)) == {p: 55 for p in range(4)}, 30, "a's commits")

        # b comes back: the partitions it gets resume at a's committed offsets
        b2 = NodeMember("b2", bs, group, topic, tmp_path)
        members = [a, b2]
        owned = _wait_split(members, range(4), 60, "a and the restarted b to split 4 partitions")
        assert sorted(len(p) for p in owned.values()) == [2, 2], owned
        assert not b2.records(), f"the restarted member re-read committed records: {b2.records()[:5]}"
        more = produce_to_partitions(bs, topic, {p: 5 for p in range(4)}, prefix="more")
        where.update(more)
        _wait_read(members, more, 45, "reading the last 20 records")
        wait_for(lambda: committed_offsets(bs, group, topic, range(4)) == {p: 60 for p in range(4)}, 30, "the last commits")
        first = {}
        for p, o, _v in b2.records():
            first.setdefault(p, o)
        assert first == {p: 55 for p in owned["b2"]}, f"the restarted member resumed at {first}, owns {owned['b2']}"
        got_b2 = sorted((p, o) for p, o, _v in b2.records())
        assert got_b2 == sorted(k for k in more if k[0] in owned["b2"]), f"the restarted member read {got_b2}"
        for m in members:
            assert m.stop() == 0, f"kafkajs member {m.name} did not stop cleanly:\n{m.stderr_tail()}"
    finally:
        for m in (a, b, *members):
            m.ensure_dead()
