"""Consumer groups with confluent-kafka (librdkafka 2.16: FindCoordinator v2, JoinGroup v5, SyncGroup v3,
Heartbeat v3, LeaveGroup v1, OffsetCommit v9, OffsetFetch v9, plus the admin group APIs): membership and
rebalances (eager range and cooperative-sticky), a member killed with SIGKILL, committed offsets across
close/reopen and broker restarts (SIGTERM and SIGKILL), the admin group operations, and the internal
`__consumer_offsets` topic."""

from __future__ import annotations

import signal
import time

import pytest
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import NewTopic

from e2e_util import admin_client, base_conf, create_topic, run_kcat
from group_util import (
    GROUP_SETTINGS,
    T,
    ConsumerProc,
    ContinuousProducer,
    Member,
    check_group_consumption,
    check_partitioning,
    committed,
    committed_offsets,
    fmt_owned,
    group_conf,
    partitioned,
    produce_to_partitions,
    pump,
    pump_for,
    wait_all,
    wait_procs_partitioned,
)

OFFSETS_TOPIC = "__consumer_offsets"


def _kafka_error(exc_info) -> KafkaError:
    err = exc_info.value.args[0]
    assert isinstance(err, KafkaError), f"unexpected exception payload {err!r}"
    return err


def _close_all(members) -> None:
    for m in members:
        try:
            m.close()
        except Exception:
            pass


# ============================================================================ 1. processes, kill -9
@pytest.mark.timeout(150)
def test_three_consumer_processes_share_partitions_and_survive_kill9(broker_factory, tmp_path):
    """Three consumer processes split 6 partitions; one is killed with SIGKILL (no LeaveGroup): once
    its session (6 s) expires the other two own all 6. Records produced throughout are all consumed,
    each ownership of a partition reads consecutive offsets starting at the group's committed offset."""
    broker = broker_factory(GROUP_SETTINGS)
    topic = group = "grp-procs"
    create_topic(broker.bootstrap, topic, 6)
    producer = ContinuousProducer(broker.bootstrap, topic, 6).start()
    procs = [ConsumerProc(n, broker.bootstrap, group, topic, tmp_path) for n in ("a", "b", "c")]
    a, b, c = procs
    try:
        owned = wait_procs_partitioned(procs, range(6), 60, "three processes to split 6 partitions")
        assert sorted(len(p) for p in owned.values()) == [2, 2, 2], f"range assignment of 6 over 3: {fmt_owned(owned)}"
        # every member is really consuming (and committing) before the kill
        n0 = {p.name: len(p.records()) for p in procs}
        wait_all(lambda: all(len(p.records()) > n0[p.name] for p in procs), 30, "records reaching every member")

        c.kill()
        killed_at = time.monotonic()
        # session.timeout.ms (6 s) for the coordinator to notice, then one rebalance
        owned = wait_procs_partitioned([a, b], range(6), 6 + 30, "the two survivors to own all 6 partitions")
        took = time.monotonic() - killed_at

        n1 = {p.name: len(p.records()) for p in (a, b)}
        wait_all(lambda: all(len(p.records()) > n1[p.name] + 20 for p in (a, b)), 30, "consumption after the rebalance")
        producer.stop()
        hw = producer.high_watermarks()

        def consumed_everything():
            seen = {(e.data["p"], e.data["o"]) for p in procs for e in p.records()}
            return all((p, o) in seen for p in hw for o in range(hw[p]))

        wait_all(consumed_everything, 45, f"the group to consume every produced record (high watermarks {hw})")
        for p in (a, b):
            assert p.close() == 0, f"consumer {p.name} exited badly:\n{p.stderr_tail()}"
    finally:
        for p in procs:
            p.ensure_dead()
        producer._stop.set()

    streams, assigns, commits = {}, {}, []
    for p in procs:
        evs = p.snapshot()
        streams[p.name] = [
            (e.data["p"], e.data["o"], None if e.data["v"] is None else e.data["v"].encode("latin-1"), e.t)
            for e in evs
            if e.ev == "msg"
        ]
        assigns[p.name] = [(e.t, set(e.data["parts"])) for e in evs if e.ev == "assign"]
        commits += [(e.t, pp, o) for e in evs if e.ev == "commit" for pp, o in e.data["offsets"]]
    problems = check_group_consumption(producer.where, hw, streams, assigns, commits)
    assert not problems, "\n".join(problems)
    # a commit racing a rebalance may fail (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION): that is normal
    errors = [e for p in procs for e in p.errors()]
    fatal = [e for e in errors if not e.startswith("commit") and "_TRANSPORT" not in e]
    assert not fatal, f"consumer errors: {fatal[:5]}"
    # the survivors committed everything when they closed
    assert committed_offsets(broker.bootstrap, group, topic, range(6)) == hw
    print(f"survivors owned all partitions {took:.1f}s after the SIGKILL; {sum(hw.values())} records; errors {errors[:5]}")


# ============================================================================ 2. more members
@pytest.mark.timeout(120)
def test_fourth_member_and_idle_members(broker_factory):
    """A fourth member joining a stable 3-member group gets partitions (range: 2,2,1,1); with more
    members than partitions the extra member gets none and the others read everything."""
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    create_topic(bs, "grp-six", 6)
    create_topic(bs, "grp-two", 2)

    def member(name, group, topic):
        return Member(name, group_conf(bs, group, client_id=name, partition_assignment_strategy="range"), [topic])

    members = [member(f"m{i}", "grp-four", "grp-six") for i in range(3)]
    idle = []
    try:
        pump(members, partitioned(members, range(6)), 45, "3 members to split 6 partitions", stable_for=1.0)
        assert sorted(len(m.owned) for m in members) == [2, 2, 2], fmt_owned({m.name: m.owned for m in members})
        members.append(member("m3", "grp-four", "grp-six"))
        pump(members, partitioned(members, range(6)), 45, "4 members to split 6 partitions", stable_for=1.0)
        assert sorted(len(m.owned) for m in members) == [1, 1, 2, 2], fmt_owned({m.name: m.owned for m in members})

        idle = [member(f"i{i}", "grp-idle", "grp-two") for i in range(3)]

        def two_busy_one_idle():
            return partitioned(idle, range(2), allow_idle=True)() and sorted(len(m.owned) for m in idle) == [0, 1, 1]

        pump(idle, two_busy_one_idle, 45, "3 members on 2 partitions: one idle", stable_for=1.0)
        before = {m.name: len(m.got) for m in idle}
        where = produce_to_partitions(bs, "grp-two", {0: 25, 1: 25})
        pump(idle, lambda: sum(len(m.got) - before[m.name] for m in idle) >= 50, 30, "the busy members to read 50 records")
        pump_for(idle, 0.5)
        assert two_busy_one_idle(), fmt_owned({m.name: m.owned for m in idle})
        got = sorted((c.partition, c.offset) for m in idle for c in m.got[before[m.name] :])
        assert got == sorted(where), "the two busy members should read each record exactly once"
        for m in idle:
            new = {c.partition for c in m.got[before[m.name] :]}
            assert new == m.owned, f"{m.name} owns {sorted(m.owned)} but read from {sorted(new)}"
    finally:
        _close_all(members + idle)


# ============================================================================ 3. commit, close, resume
@pytest.mark.timeout(90)
def test_commit_close_and_resume_at_committed_offset(broker_factory):
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    topic = group = "grp-resume"
    create_topic(bs, topic, 3)
    produce_to_partitions(bs, topic, {0: 30, 1: 30, 2: 30})

    a = Member("a", group_conf(bs, group), [topic], commit_on_revoke=False)  # only the explicit commit
    try:
        pump([a], lambda: len(a.got) >= 90, 45, "the first consumer to read all 90 records")
        res = a.consumer.commit(
            offsets=[TopicPartition(topic, 0, 12), TopicPartition(topic, 1, 30, "resume-here")], asynchronous=False
        )
        assert all(tp.error is None for tp in res), f"commit errors: {res}"
        mine = {tp.partition: tp.offset for tp in a.consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=T)}
        assert mine == {0: 12, 1: 30, 2: OFFSET_INVALID}, f"committed() by the committing member: {mine}"
    finally:
        a.close()

    seen = committed(bs, group, topic, range(3))
    assert {p: tp.offset for p, tp in seen.items()} == {0: 12, 1: 30, 2: OFFSET_INVALID}
    assert seen[1].metadata == "resume-here", f"commit metadata came back as {seen[1].metadata!r}"

    produce_to_partitions(bs, topic, {1: 5}, prefix="later")
    b = Member("b", group_conf(bs, group), [topic])
    try:
        # p0 from 12, p1 from 30 (the 5 new records), p2 (nothing committed) from the beginning
        pump([b], lambda: len(b.got) >= 18 + 5 + 30, 45, "the second consumer to resume")
        pump_for([b], 0.5)
        assert b.first_offsets() == {0: 12, 1: 30, 2: 0}, f"resumed at {b.first_offsets()}"
        by_p = {p: [c.offset for c in b.got if c.partition == p] for p in range(3)}
        assert by_p == {0: list(range(12, 30)), 1: list(range(30, 35)), 2: list(range(30))}
    finally:
        b.close()


@pytest.mark.timeout(60)
def test_auto_commit_and_resume(broker_factory):
    """The default way to consume: enable.auto.commit (here every 200 ms) commits what was consumed."""
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    topic = group = "grp-autocommit"
    create_topic(bs, topic, 2)
    produce_to_partitions(bs, topic, {0: 20, 1: 20})
    conf = group_conf(bs, group, enable_auto_commit=True, auto_commit_interval_ms=200)
    a = Member("a", conf, [topic], commit_on_revoke=False)
    try:
        pump([a], lambda: len(a.got) >= 40, 45, "reading 40 records")
        # committed in the background while the member is still in the group
        pump([a], lambda: committed_offsets(bs, group, topic, [0, 1]) == {0: 20, 1: 20}, 20, "auto commits", stable_for=0)
    finally:
        a.close()
    produce_to_partitions(bs, topic, {0: 3, 1: 3}, prefix="more")
    b = Member("b", conf, [topic])
    try:
        pump([b], lambda: len(b.got) >= 6, 45, "resuming after auto commits")
        pump_for([b], 0.3)
        assert sorted((c.partition, c.offset) for c in b.got) == [(p, o) for p in (0, 1) for o in range(20, 23)]
    finally:
        b.close()


@pytest.mark.timeout(60)
def test_static_member_restart_keeps_assignment_without_rebalance(broker_factory):
    """KIP-345 static membership (group.instance.id): a static member that closes (librdkafka sends no
    LeaveGroup for it) and comes back within session.timeout.ms gets its partitions back, and the other
    member sees no rebalance."""
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    topic = group = "grp-static"
    create_topic(bs, topic, 4)

    def member(name, instance):
        conf = group_conf(bs, group, client_id=name, partition_assignment_strategy="range")
        conf["group.instance.id"] = instance
        return Member(name, conf, [topic])

    a = member("a", "instance-a")
    members = [a]
    try:
        pump(members, partitioned(members, range(4)), 30, "the first static member to own everything", stable_for=0.5)
        b = member("b", "instance-b")  # joins second: a stays the leader, b is a follower
        members.append(b)
        pump(members, partitioned(members, range(4)), 45, "2 static members to split 4 partitions", stable_for=1.0)
        owned_b = set(b.owned)
        a_events = len(a.events)

        b.close()
        members.remove(b)
        pump_for(members, 1.0)
        b2 = member("b2", "instance-b")
        members.append(b2)
        pump(members, lambda: b2.owned == owned_b and partitioned(members, range(4))(), 5 + 15, "the static member's return")
        pump_for(members, 1.0)
        assert a.events[a_events:] == [], f"the other static member went through a rebalance: {a.events[a_events:]}"
        assert b2.owned == owned_b
    finally:
        _close_all(members)


@pytest.mark.timeout(150)
def test_offsets_of_empty_groups_expire_after_retention(broker_factory):
    """offsets.retention.minutes (1 here, checked every second), as Kafka since KIP-211:
    * a group without members (a standalone commit) loses its offsets about a minute after the commit,
      not before, and then disappears from ListGroups;
    * a group whose member is subscribed to the topic keeps its offsets however old the commit;
    * once that group becomes empty its offsets live another full retention period from that moment,
      not from the (older than a minute) commit: an idle partition's offset must survive a short restart
      of the consumers."""
    broker = broker_factory({**GROUP_SETTINGS, "offsets.retention.minutes": 1, "offsets.retention.check.interval.ms": 1000})
    bs = broker.bootstrap
    topic = "grp-retention"
    create_topic(bs, topic, 2)
    produce_to_partitions(bs, topic, {0: 10, 1: 10})
    admin = admin_client(bs)
    problems = []

    live = Member("live", group_conf(bs, "grp-ret-live"), [topic])
    try:
        pump([live], lambda: len(live.got) >= 20, 45, "the live member to read 20 records")
        live.commit()
        c = Consumer(group_conf(bs, "grp-ret-gone"))
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            c.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
        finally:
            c.close()
        committed_at = time.monotonic()
        assert "grp-ret-gone" in _list_groups(admin)

        pump_for([live], 30)
        assert _group_offsets(admin, "grp-ret-gone") == {(topic, 0): 5}, "offsets expired long before the retention"
        pump([live], lambda: _group_offsets(admin, "grp-ret-gone") == {}, 60 + 30, "the standalone group's offsets to expire")
        waited = time.monotonic() - committed_at
        assert waited > 55, f"offsets expired {waited:.0f}s after the commit, retention is 60s"
        try:
            pump([live], lambda: "grp-ret-gone" not in _list_groups(admin), 5, "the expired group to disappear")
        except AssertionError:
            problems.append("an empty group whose offsets all expired is still listed by ListGroups (Kafka removes it)")
        assert _group_offsets(admin, "grp-ret-live") == {(topic, 0): 10, (topic, 1): 10}, "an active group's offsets expired"
        pump_for([live], max(0.0, committed_at + 62 - time.monotonic()))
        # a minute of heartbeats (every 500 ms, session 6 s) kept the lone member in the group throughout
        assert [e[0] for e in live.events] == ["assign"], f"the live member went through rebalances: {live.events}"
    finally:
        live.close()

    # the live group is empty now; its commit is over a minute old
    time.sleep(5)
    left = _group_offsets(admin, "grp-ret-live")
    if left != {(topic, 0): 10, (topic, 1): 10}:
        problems.append(
            f"offsets of a group that became empty 5 s ago expired (left: {left}): Kafka (KIP-211) counts the"
            " retention from the moment a consumer group becomes empty, not from the commit"
        )
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("librdkafka", ["system", "bundled"])
def test_kcat_balanced_consumer_commits_and_resumes(broker_factory, librdkafka):
    """kcat -G (a balanced consumer) on Debian's librdkafka 2.0.2 and on the wheel's 2.16: reads everything,
    commits on exit, and the next run reads only what came after."""
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    topic = group = f"grp-kcat-{librdkafka}"
    create_topic(bs, topic, 2)
    produce_to_partitions(bs, topic, {0: 10, 1: 10})
    args = ["-b", bs, "-G", group, "-X", "auto.offset.reset=earliest", "-X", "broker.address.family=v4", "-e", "-q"]
    args += ["-f", "%p %o\n", topic]

    def run():
        proc = run_kcat(args, librdkafka=librdkafka, timeout=60)
        assert proc.returncode == 0, f"kcat -G failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}"
        return sorted(tuple(int(x) for x in line.split()) for line in proc.stdout.decode().splitlines() if line.strip())

    assert run() == [(p, o) for p in (0, 1) for o in range(10)]
    assert committed_offsets(bs, group, topic, [0, 1]) == {0: 10, 1: 10}
    produce_to_partitions(bs, topic, {0: 5, 1: 5}, prefix="more")
    assert run() == [(p, o) for p in (0, 1) for o in range(10, 15)]
    assert committed_offsets(bs, group, topic, [0, 1]) == {0: 15, 1: 15}


# ============================================================================ 4. broker restarts
@pytest.mark.timeout(150)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_committed_offsets_survive_broker_restart(broker_factory, sig):
    """Offsets committed (and acknowledged) before a restart are there after it, the newest commit of a
    partition wins, a member connected across the restart carries on, and new commits work."""
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    topic = "grp-restart"
    create_topic(bs, topic, 2)
    produce_to_partitions(bs, topic, {0: 40, 1: 40})

    # the main group: consume, commit three times on p0 (the last one counts), everything on p1
    a = Member("a", group_conf(bs, "grp-main"), [topic], commit_on_revoke=False)
    try:
        pump([a], lambda: len(a.got) >= 80, 45, "reading 80 records")
        for off in (10, 20, 25):
            a.consumer.commit(offsets=[TopicPartition(topic, 0, off)], asynchronous=False)
        a.consumer.commit(offsets=[TopicPartition(topic, 1, 40, "p1-done")], asynchronous=False)
    finally:
        a.close()
    # standalone commits (assign, no subscribe) of several groups: spread over __consumer_offsets partitions
    extra = {f"grp-extra-{i}": i + 1 for i in range(8)}
    for g, off in extra.items():
        c = Consumer(group_conf(bs, g))
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            c.commit(offsets=[TopicPartition(topic, 0, off)], asynchronous=False)
        finally:
            c.close()
    # a member that stays connected across the restart
    live = Member("live", group_conf(bs, "grp-live"), [topic])
    members = [live]
    try:
        pump(members, lambda: len(live.got) >= 80, 45, "the live member to read 80 records")
        live.commit()
        assert committed_offsets(bs, "grp-live", topic, range(2)) == {0: 40, 1: 40}

        broker.restart(sig)

        assert committed_offsets(bs, "grp-main", topic, range(2)) == {0: 25, 1: 40}
        assert committed(bs, "grp-main", topic, [1])[1].metadata == "p1-done"
        for g, off in extra.items():
            assert committed_offsets(bs, g, topic, [0]) == {0: off}, f"group {g} after the restart"

        # the member that lived through the restart reads what comes after it and commits again
        produce_to_partitions(bs, topic, {0: 5, 1: 5}, prefix="after")
        pump(members, lambda: len(live.got) >= 90, 60, "the live member to read the 10 new records")

        def committed_after():
            try:
                live.commit()
            except KafkaException:
                return False  # e.g. a rebalance in progress after the coordinator came back
            return committed_offsets(bs, "grp-live", topic, range(2)) == {0: 45, 1: 45}

        pump(members, committed_after, 60, "a commit after the restart")
        new = sorted((c.partition, c.offset) for c in live.got[80:])
        assert new == [(p, o) for p in (0, 1) for o in range(40, 45)], f"after the restart the live member read {new}"
    finally:
        _close_all(members)

    # a new member of the main group resumes where the group committed before the restart
    b = Member("b", group_conf(bs, "grp-main"), [topic])
    try:
        # p0: 25..44 (40 produced before, 5 after the restart), p1: 40..44
        pump([b], lambda: len(b.got) >= 20 + 5, 45, "resuming after the restart")
        pump_for([b], 0.3)
        assert b.first_offsets() == {0: 25, 1: 40}
        by_p = {p: [c.offset for c in b.got if c.partition == p] for p in (0, 1)}
        assert by_p == {0: list(range(25, 45)), 1: list(range(40, 45))}, f"resumed with {by_p}"
    finally:
        b.close()


# ============================================================================ 5. cooperative-sticky
@pytest.mark.timeout(120)
def test_cooperative_sticky_incremental_rebalance(broker_factory):
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    topic = group = "grp-coop"
    create_topic(bs, topic, 6)
    where = produce_to_partitions(bs, topic, {p: 20 for p in range(6)})

    def member(name):
        return Member(name, group_conf(bs, group, client_id=name, partition_assignment_strategy="cooperative-sticky"), [topic])

    members = [member("m1"), member("m2")]
    try:
        pump(members, partitioned(members, range(6)), 45, "2 cooperative members to split 6 partitions", stable_for=1.0)
        assert sorted(len(m.owned) for m in members) == [3, 3], fmt_owned({m.name: m.owned for m in members})
        before = {m.name: set(m.owned) for m in members}
        marks = {m.name: len(m.events) for m in members}

        where.update(produce_to_partitions(bs, topic, {p: 20 for p in range(6)}, prefix="mid"))
        members.append(member("m3"))
        pump(members, partitioned(members, range(6)), 45, "3 cooperative members to split 6 partitions", stable_for=1.0)
        owned = {m.name: set(m.owned) for m in members}
        assert sorted(len(p) for p in owned.values()) == [2, 2, 2], fmt_owned(owned)

        for m in members[:2]:
            later = m.events[marks[m.name] :]
            revoked = {p for ev, ps, _t in later if ev == "revoke" for p in ps}
            assert not [e for e in later if e[0] == "lost"], f"{m.name} lost partitions: {later}"
            # incremental: a member gives up only what moves; it keeps (sticky) the rest
            assert revoked and revoked < before[m.name], f"{m.name} revoked {sorted(revoked)} of {sorted(before[m.name])}"
            assert owned[m.name] == before[m.name] - revoked, f"{m.name}: {later}"
        moved = before["m1"] - owned["m1"] | before["m2"] - owned["m2"]
        assert owned["m3"] == moved, f"the newcomer got {owned['m3']}, moved were {moved}"

        where.update(produce_to_partitions(bs, topic, {p: 20 for p in range(6)}, prefix="late"))

        def all_consumed():
            return {(c.partition, c.offset) for m in members for c in m.got} >= set(where)

        pump(members, all_consumed, 45, "the group to consume all 360 records")
        for m in members:
            for c in m.got:
                assert where[(c.partition, c.offset)] == c.value
    finally:
        _close_all(members)


# ============================================================================ 8. admin
def _list_groups(admin, states=None) -> dict[str, object]:
    kwargs = {"request_timeout": T}
    if states is not None:
        kwargs["states"] = set(states)
    res = admin.list_consumer_groups(**kwargs).result(timeout=T)
    assert not res.errors, f"list_consumer_groups errors: {res.errors}"
    return {g.group_id: g for g in res.valid}


def _group_offsets(admin, group) -> dict[tuple[str, int], int]:
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=T)[group].result(timeout=T)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"list_consumer_group_offsets({group}) {tp}: {tp.error}"
        if tp.offset >= 0:
            out[(tp.topic, tp.partition)] = tp.offset
    return out


@pytest.mark.timeout(150)
def test_admin_group_operations(broker_factory):
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient

    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    topic, group = "grp-admin", "grp-admin"
    create_topic(bs, topic, 4)
    produce_to_partitions(bs, topic, {p: 10 for p in range(4)})
    admin = admin_client(bs)

    # a standalone commit: assign + commit with a group.id, never subscribed
    c = Consumer(group_conf(bs, "grp-standalone"))
    try:
        c.assign([TopicPartition(topic, 2, 0)])
        c.commit(offsets=[TopicPartition(topic, 2, 7)], asynchronous=False)
    finally:
        c.close()
    assert _group_offsets(admin, "grp-standalone") == {(topic, 2): 7}

    members = [
        Member(n, group_conf(bs, group, client_id=f"client-{n}", partition_assignment_strategy="range"), [topic])
        for n in ("x", "y")
    ]
    try:
        pump(members, partitioned(members, range(4)), 45, "2 members to split 4 partitions", stable_for=1.0)
        pump(members, lambda: sum(len(m.got) for m in members) >= 40, 30, "reading all 40 records")
        for m in members:
            m.commit()

        # ListGroups, with and without a state filter
        listed = _list_groups(admin)
        assert group in listed and "grp-standalone" in listed, f"listed groups: {sorted(listed)}"
        assert listed[group].is_simple_consumer_group is False
        assert listed["grp-standalone"].is_simple_consumer_group is True, "a group with only commits has no protocol type"
        stable = _list_groups(admin, [ConsumerGroupState.STABLE])
        assert set(stable) == {group}, f"STABLE groups: {sorted(stable)}"
        assert stable[group].state == ConsumerGroupState.STABLE
        empty = _list_groups(admin, [ConsumerGroupState.EMPTY])
        assert set(empty) == {"grp-standalone"}, f"EMPTY groups: {sorted(empty)}"

        # DescribeGroups
        desc = admin.describe_consumer_groups([group], request_timeout=T)[group].result(timeout=T)
        assert desc.group_id == group and desc.state == ConsumerGroupState.STABLE, f"state {desc.state}"
        assert desc.is_simple_consumer_group is False
        assert desc.partition_assignor == "range", f"assignor {desc.partition_assignor!r}"
        assert desc.coordinator is not None and desc.coordinator.port == broker.port
        assert {d.member_id for d in desc.members} == {m.consumer.memberid() for m in members}
        assert {d.client_id for d in desc.members} == {"client-x", "client-y"}
        by_client = {d.client_id: {(tp.topic, tp.partition) for tp in d.assignment.topic_partitions} for d in desc.members}
        for m in members:
            assert by_client[f"client-{m.name}"] == {(topic, p) for p in m.owned}, f"described assignment {by_client}"

        # OffsetFetch for the whole group
        assert _group_offsets(admin, group) == {(topic, p): 10 for p in range(4)}

        # DeleteGroups refuses a group with members
        with pytest.raises(KafkaException) as ei:
            admin.delete_consumer_groups([group], request_timeout=T)[group].result(timeout=T)
        assert _kafka_error(ei).code() == KafkaError.NON_EMPTY_GROUP, _kafka_error(ei)

        # OffsetDelete refuses partitions of a topic the active members subscribe to
        kadmin = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=T * 1000)
        res = kadmin.delete_group_offsets(group, [KTopicPartition(topic, 3)])
        err = res[KTopicPartition(topic, 3)]
        assert err.__name__ == "GroupSubscribedToTopicError", f"OffsetDelete on an active group: {err}"

        # an admin commit (generation -1, no member) into a group with members is refused
        try:
            res = admin.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 3)])], request_timeout=T
            )[group].result(timeout=T)
            errs = [tp.error for tp in res.topic_partitions if tp.error is not None]
            assert errs, "alter_consumer_group_offsets on an active group succeeded"
            codes = {e.code() for e in errs}
        except KafkaException as exc:
            codes = {exc.args[0].code()}
        assert codes == {KafkaError.UNKNOWN_MEMBER_ID}, f"admin commit into an active group: {codes}"
    finally:
        _close_all(members)

    try:
        # LeaveGroup (close) empties the group at once
        wait_all(lambda: group in _list_groups(admin, [ConsumerGroupState.EMPTY]), 20, "the group to become EMPTY")
        desc = admin.describe_consumer_groups([group], request_timeout=T)[group].result(timeout=T)
        assert desc.state == ConsumerGroupState.EMPTY and not desc.members

        # AlterConsumerGroupOffsets on the empty group
        admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 3)])], request_timeout=T
        )[group].result(timeout=T)
        assert _group_offsets(admin, group) == {(topic, 0): 3, (topic, 1): 10, (topic, 2): 10, (topic, 3): 10}

        # OffsetDelete (kafka-python's admin: confluent-kafka's Python client has no call for it)
        res = kadmin.delete_group_offsets(group, [KTopicPartition(topic, 1)])
        assert res[KTopicPartition(topic, 1)].__name__ == "NoError", f"OffsetDelete: {res}"
        assert _group_offsets(admin, group) == {(topic, 0): 3, (topic, 2): 10, (topic, 3): 10}
    finally:
        kadmin.close()

    # a member of the group resumes at the altered offsets; p1 (offset deleted) starts from the reset point
    r = Member("r", group_conf(bs, group), [topic])
    try:
        pump([r], lambda: len(r.got) >= 7 + 10, 45, "resuming at the altered offsets")
        pump_for([r], 0.3)
        assert r.first_offsets() == {0: 3, 1: 0}, f"resumed at {r.first_offsets()}"
    finally:
        r.close()

    # DeleteGroups succeeds once the group is empty; the offsets go with it
    admin.delete_consumer_groups([group], request_timeout=T)[group].result(timeout=T)
    assert group not in _list_groups(admin)
    assert _group_offsets(admin, group) == {}
    with pytest.raises(KafkaException) as ei:
        admin.delete_consumer_groups([group], request_timeout=T)[group].result(timeout=T)
    assert _kafka_error(ei).code() == KafkaError.GROUP_ID_NOT_FOUND, _kafka_error(ei)
    assert "grp-standalone" in _list_groups(admin), "deleting one group must leave the others"


# ============================================================================ 9. __consumer_offsets
@pytest.mark.timeout(90)
def test_consumer_offsets_topic_is_internal(broker_factory):
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    create_topic(bs, "grp-internal", 1)
    c = Consumer(group_conf(bs, "grp-internal"))
    try:
        c.assign([TopicPartition("grp-internal", 0, 0)])
        c.commit(offsets=[TopicPartition("grp-internal", 0, 1)], asynchronous=False)
    finally:
        c.close()
    admin = admin_client(bs)

    md = admin.list_topics(timeout=T)
    assert OFFSETS_TOPIC not in md.topics, "listing all topics shows the internal __consumer_offsets"
    assert "grp-internal" in md.topics
    md = admin.list_topics(topic=OFFSETS_TOPIC, timeout=T)
    t = md.topics[OFFSETS_TOPIC]
    assert t.error is None and len(t.partitions) == 50, f"__consumer_offsets asked for by name: {t.error}, {len(t.partitions)}"

    with pytest.raises(KafkaException) as ei:
        admin.delete_topics([OFFSETS_TOPIC], operation_timeout=T, request_timeout=T)[OFFSETS_TOPIC].result(timeout=T)
    print(f"DeleteTopics(__consumer_offsets): {_kafka_error(ei)}")
    with pytest.raises(KafkaException) as ei:
        admin.create_topics([NewTopic(OFFSETS_TOPIC, 3, 1)], operation_timeout=T, request_timeout=T)[OFFSETS_TOPIC].result(
            timeout=T
        )
    print(f"CreateTopics(__consumer_offsets): {_kafka_error(ei)}")

    md = admin.list_topics(topic=OFFSETS_TOPIC, timeout=T)
    assert len(md.topics[OFFSETS_TOPIC].partitions) == 50, "__consumer_offsets changed after a refused delete/create"
    assert committed_offsets(bs, "grp-internal", "grp-internal", [0]) == {0: 1}


@pytest.mark.timeout(90)
def test_clients_cannot_write_to_consumer_offsets(broker_factory):
    """Kafka refuses client Produce to an internal topic (INVALID_TOPIC_EXCEPTION): junk there would break
    the offset store's reload. After the attempt, a restart still loads the committed offsets."""
    broker = broker_factory(GROUP_SETTINGS)
    bs = broker.bootstrap
    create_topic(bs, "grp-junk", 1)
    c = Consumer(group_conf(bs, "grp-junk"))
    try:
        c.assign([TopicPartition("grp-junk", 0, 0)])
        c.commit(offsets=[TopicPartition("grp-junk", 0, 5)], asynchronous=False)
    finally:
        c.close()

    errors, acked = [], []
    producer = Producer({**base_conf(bs), "message.timeout.ms": 10000, "retries": 0})
    for p in range(50):
        producer.produce(
            OFFSETS_TOPIC,
            key=b"\x00\x01junk",
            value=b"not an offset commit",
            partition=p,
            on_delivery=lambda err, msg: (errors if err else acked).append(err or msg.partition()),
        )
    assert producer.flush(30) == 0
    assert not acked, f"Produce to __consumer_offsets was accepted on partitions {acked[:10]}"
    print(f"Produce to __consumer_offsets: {errors[0]}")

    broker.restart(signal.SIGTERM)
    assert committed_offsets(bs, "grp-junk", "grp-junk", [0]) == {0: 5}


@pytest.mark.timeout(10)
def test_partitioning_check_helper():
    """The assignment check used above (no broker)."""
    assert check_partitioning({"a": {0, 1}, "b": {2}}, range(3)) is None
    assert "both" in check_partitioning({"a": {0, 1}, "b": {1, 2}}, range(3))
    assert "owns nothing" in check_partitioning({"a": {0, 1, 2}, "b": set()}, range(3))
    assert check_partitioning({"a": {0, 1, 2}, "b": set()}, range(3), allow_idle=True) is None
    assert "instead of" in check_partitioning({"a": {0}}, range(2))


@pytest.mark.timeout(10)
def test_group_consumption_check_helper():
    """check_group_consumption finds gaps, skips within an assignment and resumes below a commit (no broker)."""
    where = {(0, o): f"v{o}".encode() for o in range(6)}
    hw = {0: 6}
    ok_streams = {
        "a": [(0, 0, b"v0", 1.0), (0, 1, b"v1", 1.1), (0, 2, b"v2", 1.2), (0, 3, b"v3", 1.3)],
        "b": [(0, 2, b"v2", 3.0), (0, 3, b"v3", 3.1), (0, 4, b"v4", 3.2), (0, 5, b"v5", 3.3)],
    }
    assigns = {"a": [(0.5, {0})], "b": [(2.5, {0})]}
    commits = [(1.25, 0, 2)]  # a committed 2 and died after reading 3: b re-reads 2 and 3
    assert check_group_consumption(where, hw, ok_streams, assigns, commits) == []
    gap = {"a": ok_streams["a"], "b": [(0, 5, b"v5", 3.3)]}
    assert any("never consumed" in p for p in check_group_consumption(where, hw, gap, assigns, [(1.25, 0, 4)]))
    skip = {"a": [(0, 0, b"v0", 1.0), (0, 2, b"v2", 1.1)], "b": ok_streams["b"]}
    assert any("jumped" in p for p in check_group_consumption(where, hw, skip, assigns, []))
    below = check_group_consumption(where, hw, ok_streams, assigns, [(1.25, 0, 4)])
    assert any("below the offset 4" in p for p in below), below
    wrong = {"a": [(0, 0, b"xx", 1.0)] + ok_streams["a"][1:], "b": ok_streams["b"]}
    assert any("has value" in p for p in check_group_consumption(where, hw, wrong, assigns, commits))
