"""Seeded random chaos runs on a NetnsCluster (issue 12), and the campaign behind scripts/chaos.

One run (``run_once``): the seed picks the nemeses, their targets and a schedule (printed and
saved); an RF=3, min.insync.replicas=2 topic gets producers (confluent-kafka idempotent and
non-idempotent acks=all, kafka-python acks=all, the native client idempotent acks=all through
`vltava produce`, plus an acks=1 one when the schedule kills a leader under it) and two group consumers while the faults run; then everything is healed, the
cluster settles (bounded), the writers finish, every partition is read from every replica's
segment files and once through the Kafka API, the group's committed offsets are read back, and
checker.check judges the history. The run directory keeps the seed, the schedule, the history,
the final reads, the report and every node's log; it is deleted on success unless kept.

The seed fixes the schedule, not the brokers' timing: a replay injects the same faults at the
same offsets from the start, while elections, leaders and client retries may differ.

    .venv/bin/python tests/chaos/runner.py --seed 7 --seconds 60 [--nemesis kill,pause] [--keep]
    .venv/bin/python tests/chaos/runner.py --runs 5 --minutes 2      # a campaign (scripts/chaos)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nemesis as nem  # noqa: E402
import netns  # noqa: E402

TOPIC = "chaos"
GROUP = "vtvchaos-group"
WARMUP_S = 5.0  # workloads acknowledging before the first fault
TAIL_S = 3.0  # the last fault ends this long before the end of the faulty phase
MIN_FAULT_S, MAX_FAULT_S = 3.0, 15.0
MIN_GAP_S, MAX_GAP_S = 2.0, 6.0
OVERLAP_P = 0.35
SETTLE_S = 90.0  # after the heal: every ISR full, leaders agreed
POST_HEAL_S = 4.0  # writers keep going once settled, so the checker sees writes succeed again
ROLLING_PER_NODE_S = 7.0  # planning estimate of one node's turn in a rolling restart
RESULTS_MD = HERE / "RESULTS.md"
DEFAULT_OUT = Path(os.environ.get("VTV_CHAOS_OUT", "/tmp/vtv-chaos-runs"))


# ----------------------------------------------------------------------------- schedule
@dataclass
class FaultSpec:
    id: int
    kind: str
    at: float  # seconds after the start of the faulty phase
    duration: float
    params: dict
    overlaps: int | None = None  # the fault this one runs beside

    def line(self) -> str:
        ov = f" overlapping #{self.overlaps}" if self.overlaps is not None else ""
        return f"#{self.id} {self.kind:<19} at {self.at:5.1f}s for {self.duration:4.1f}s {self.params}{ov}"


def _planned(spec: FaultSpec) -> set[int]:
    return nem.make(spec.kind, spec.id, spec.params, TOPIC).planned_nodes()


def make_schedule(seed: int, seconds: float, n_nodes: int = 3, n_partitions: int = 4,
                  kinds: list[str] | None = None) -> list[FaultSpec]:
    """The faults of a run, from the seed alone: kinds drawn from `kinds` (default
    nemesis.DEFAULT_KINDS, every kind but the unclean election), each for 3-15 s with 2-6 s of
    quiet between, sometimes a second one overlapping on other nodes."""
    kinds = list(kinds or nem.DEFAULT_KINDS)
    unknown = [k for k in kinds if k not in nem.NEMESES]
    if unknown:
        raise ValueError(f"unknown nemesis kinds {unknown}; known: {nem.KINDS}")
    rng = random.Random(seed)
    end = seconds - TAIL_S
    t = WARMUP_S + rng.uniform(0, 2)
    out: list[FaultSpec] = []
    while True:
        kind = rng.choice(kinds)
        cls = nem.NEMESES[kind]
        if cls is nem.RollingRestart:
            dur = ROLLING_PER_NODE_S * n_nodes
        else:
            dur = rng.uniform(MIN_FAULT_S, MAX_FAULT_S)
        if t + min(dur, MIN_FAULT_S) > end or (cls is nem.RollingRestart and t + dur > end):
            break
        dur = round(min(dur, end - t), 1)
        first = FaultSpec(len(out), kind, round(t, 1), dur, cls.plan(rng, n_nodes, n_partitions, set()))
        out.append(first)
        stop = t + dur
        pairable = [k for k in kinds if not nem.NEMESES[k].exclusive
                    and not (nem.NEMESES[k].needs_acks1 and cls.needs_acks1)]
        if not cls.exclusive and pairable and rng.random() < OVERLAP_P:
            k2 = rng.choice(pairable)
            s2 = t + rng.uniform(0.5, max(0.6, dur * 0.6))
            d2 = min(rng.uniform(MIN_FAULT_S, MAX_FAULT_S * 0.8), end - s2)
            if d2 >= 2.0:
                params = nem.NEMESES[k2].plan(rng, n_nodes, n_partitions, _planned(first))
                out.append(FaultSpec(len(out), k2, round(s2, 1), round(d2, 1), params, overlaps=first.id))
                stop = max(stop, s2 + d2)
        t = stop + rng.uniform(MIN_GAP_S, MAX_GAP_S)
    return out


def schedule_json(schedule: list[FaultSpec]) -> list[dict]:
    return [asdict(s) for s in schedule]


# ----------------------------------------------------------------------------- one run
@dataclass
class RunResult:
    seed: int
    seconds: float
    nodes: int
    kinds: list[str] | None
    schedule: list[FaultSpec]
    faults: list[dict] = field(default_factory=list)
    report: object = None
    harness_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_dir: Path | None = None
    kept: bool = False
    wall_s: float = 0.0

    def ok(self) -> bool:
        return self.report is not None and self.report.ok() and not self.harness_errors

    def replay_cmd(self) -> str:
        extra = f" --nemesis {','.join(self.kinds)}" if self.kinds else ""
        extra += f" --nodes {self.nodes}" if self.nodes != 3 else ""
        return f"VTV_CHAOS_SEED={self.seed} scripts/chaos --seed {self.seed} --seconds {self.seconds:g}{extra}"

    def row(self) -> dict:
        r = self.report
        g = (lambda name: getattr(r, name, None)) if r is not None else (lambda name: None)
        exp = g("expected_losses")
        return {
            "seed": self.seed, "seconds": self.seconds,
            "nemeses": ",".join(f["kind"] for f in self.faults) or "-",
            "attempted": g("attempted"), "acknowledged": g("acknowledged"), "failed": g("failed"),
            "indeterminate": g("indeterminate"), "lost": g("lost"),
            "expected_lost": len(exp) if isinstance(exp, (list, tuple, set, dict)) else exp,
            "duplicates": g("duplicates"), "inconsistent": g("inconsistent_offsets"), "moved": g("moved"),
            "reordered": g("reordered"), "backwards": g("consumer_backwards"), "commits_lost": g("commits_lost"),
            "verdict": "ok" if self.ok() else ("HARNESS" if self.report is None else "FAIL"),
        }


def _log(msg: str) -> None:
    print(f"[chaos] {msg}", flush=True)


def _check(history, final_reads, final_committed):
    import checker  # lazily: tests/chaos/checker.py

    return checker.check(history, final_reads, final_committed, expect_loss=False)


def _replica_sets(c: netns.NetnsCluster, n_partitions: int) -> dict[int, list[int]]:
    """partition -> its replicas (metadata; with more nodes than RF=3 the others hold nothing).
    Without an answer: the nodes that have a directory for it."""
    lay = nem.layout(c, TOPIC)
    out = {}
    for p in range(n_partitions):
        if p in lay and lay[p][1]:
            out[p] = sorted(lay[p][1])
        else:
            out[p] = [i for i, n in sorted(c.nodes.items()) if (n.data_dir / f"{TOPIC}-{p}").is_dir()]
    return out


def _replica_ends(c: netns.NetnsCluster, replicas: dict[int, list[int]]) -> dict[int, dict[int, tuple[int, int]]]:
    import segments

    out: dict[int, dict[int, tuple[int, int]]] = {}
    for p, ids in replicas.items():
        out[p] = {}
        for i in ids:
            r = segments.read_partition(c.nodes[i].data_dir, TOPIC, p, verify_crc=False)
            out[p][i] = (len(r.records), r.records[-1].offset if r.records else -1)
    return out


def _wait_converged(c: netns.NetnsCluster, replicas: dict[int, list[int]], timeout: float) -> tuple[bool, dict]:
    deadline = time.monotonic() + timeout
    while True:
        ends = _replica_ends(c, replicas)
        if all(len(set(v.values())) == 1 for v in ends.values()):
            return True, ends
        if time.monotonic() > deadline:
            return False, ends
        time.sleep(0.5)


def _create_topic(c: netns.NetnsCluster, n_partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": c.bootstrap_all(), "broker.address.family": "v4", "log_level": 3})
    deadline = time.monotonic() + 60
    while len(admin.list_topics(timeout=10).brokers) < c.n:
        if time.monotonic() > deadline:
            raise RuntimeError("not every broker registered within 60 s")
        time.sleep(0.3)
    admin.create_topics([NewTopic(TOPIC, num_partitions=n_partitions, replication_factor=3, config={
        "min.insync.replicas": "2", "unclean.leader.election.enable": "false"})])[TOPIC].result(timeout=30)
    ok, waited, why = nem.wait_settled(c, [TOPIC], 60)
    if not ok:
        raise RuntimeError(f"topic {TOPIC} not settled within 60 s: {why}")


def _execute(schedule: list[FaultSpec], c: netns.NetnsCluster, seed: int, t0: float,
             faults: list[nem.Nemesis], errors: list[str]) -> None:
    """Start and stop each fault at its time (a blocking start, e.g. a rolling restart, delays
    what follows; the recorded times are the real ones)."""
    events = []
    for spec in schedule:
        events.append((spec.at, 1, spec))
        events.append((spec.at + spec.duration, 0, spec))
    events.sort(key=lambda e: (e[0], e[1], e[2].id))
    running: dict[int, nem.Nemesis] = {}
    for at, is_start, spec in events:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if is_start:
            n = nem.make(spec.kind, spec.id, spec.params, TOPIC)
            faults.append(n)
            n.t_start = time.monotonic()
            try:
                n.start(c, random.Random(f"{seed}:{spec.id}"))
                running[spec.id] = n
            except Exception as exc:
                n.detail += f" START FAILED: {type(exc).__name__}: {exc}"
                errors.append(f"fault #{spec.id} {spec.kind}: start: {exc}")
                n.t_end = time.monotonic()
            _log(f"+{time.monotonic() - t0:5.1f}s start #{spec.id} {n.describe()}")
        else:
            n = running.pop(spec.id, None)
            if n is None:
                continue
            try:
                n.stop(c)
            except Exception as exc:
                n.detail += f" STOP FAILED: {type(exc).__name__}: {exc}"
                errors.append(f"fault #{spec.id} {spec.kind}: stop: {exc}")
            n.t_end = time.monotonic()
            _log(f"+{time.monotonic() - t0:5.1f}s stop  #{spec.id} {n.kind} after {n.t_end - n.t_start:.1f}s")
    for n in running.values():  # only if the loop was cut short
        try:
            n.stop(c)
        except Exception as exc:
            errors.append(f"fault #{n.fid} {n.kind}: stop: {exc}")
        n.t_end = time.monotonic()


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _run_body(c: netns.NetnsCluster, res: RunResult, schedule: list[FaultSpec], partitions: int, history,
              faults: list, workers: list, final_reads: dict, final_committed: dict) -> None:
    import segments
    import workload as wl

    seed, seconds = res.seed, res.seconds
    _create_topic(c, partitions)
    boot = c.bootstrap_all()
    parts = list(range(partitions))
    producers = [
        wl.ConfluentProducer("p1", boot, TOPIC, parts, history, acks="all", idempotent=True, rate=150, seed=seed),
        wl.ConfluentProducer("p2", boot, TOPIC, parts, history, acks="all", idempotent=False, rate=50,
                             order="random", seed=seed),
        wl.KafkaPythonProducer("p3", boot, TOPIC, parts, history, acks="all", idempotent=False, rate=50, seed=seed),
        wl.NativeProducer("p4", boot, TOPIC, parts, history, acks="all", idempotent=True, rate=60, seed=seed,
                          vltava_bin=str(netns.vltava_bin())),
    ]
    if any(nem.NEMESES[s.kind].needs_acks1 for s in schedule):
        # Over every partition: whichever the killed leader leads has acks=1 writes in flight.
        producers.append(wl.ConfluentProducer("q1", boot, TOPIC, parts, history, acks="1", idempotent=False,
                                              rate=200, seed=seed))
    consumers = [wl.GroupConsumer(f"c{i}", boot, TOPIC, GROUP, history) for i in (1, 2)]
    for w in producers + consumers:
        workers.append(w)
        _log(f"workload {w.describe()}")
        w.start()
    deadline = time.monotonic() + 30
    while history.count(op="send", status="ok") < 50 or history.count(op="assign") < 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"workloads not under way after 30 s: {history.count(op='send', status='ok')} acks, "
                               f"{history.count(op='assign')} assignments")
        time.sleep(0.2)
    t0 = time.monotonic()
    try:
        _execute(schedule, c, seed, t0, faults, res.harness_errors)
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    finally:
        healed = c.heal_all()
        _log(f"heal_all: {healed or 'nothing left to heal'}")
    ok, waited, why = nem.wait_settled(c, [TOPIC, "__consumer_offsets"], SETTLE_S)
    res.notes.append(f"settled {waited:.1f}s after the heal" if ok else f"NOT settled after {waited:.0f}s: {why}")
    _log(res.notes[-1])
    if not ok:
        res.harness_errors.append(f"cluster not settled {SETTLE_S:.0f}s after the heal: {why}")
    time.sleep(POST_HEAL_S)
    for w in producers:
        w.stop()
    for w in producers + consumers:
        problem = w.finish()
        if problem:
            res.harness_errors.append(problem)
    nem.wait_settled(c, [TOPIC], 60)
    replicas = _replica_sets(c, partitions)
    conv, ends = _wait_converged(c, replicas, 30)
    res.notes.append(f"replicas {'converged' if conv else 'NOT converged'} (records, last offset): {ends}")
    _log(res.notes[-1])
    # The final reads: every replica's files, then the Kafka API once.
    for p in parts:
        final_reads[p] = {}
        for i in replicas[p]:
            r = segments.read_partition(c.nodes[i].data_dir, TOPIC, p)
            final_reads[p][i] = r.pairs()
            for prob in r.problems:
                res.harness_errors.append(f"segment read node {i} p{p}: {prob}")
    api, problems = wl.read_through_api(boot, TOPIC, parts)
    for p, recs in api.items():
        final_reads[p]["api"] = recs
    res.notes += [f"api read: {x}" for x in problems]
    try:
        final_committed.update(wl.read_committed(boot, GROUP, TOPIC, parts))
    except Exception as exc:
        res.harness_errors.append(f"committed offsets not read back: {exc}")
    res.faults = [n.fault_op() for n in faults]
    res.report = _check(history.ops() + res.faults, final_reads, final_committed)


def run_once(seed: int, seconds: float = 60.0, nemeses: list[str] | None = None, nodes: int = 3,
             out_dir: Path | None = None, keep: bool = False, partitions: int = 4) -> RunResult:
    import workload as wl

    t_wall = time.monotonic()
    _log(f"seed={seed} seconds={seconds:g} nodes={nodes} partitions={partitions} nemeses={','.join(nemeses) if nemeses else 'any'}")
    schedule = make_schedule(seed, seconds, nodes, partitions, nemeses)
    res = RunResult(seed, seconds, nodes, list(nemeses) if nemeses else None, schedule)
    if not schedule:
        _log(f"WARNING: no fault fits in {seconds:g}s (a rolling restart is planned at {ROLLING_PER_NODE_S:g}s per node)")
    _log(f"schedule ({len(schedule)} faults):")
    for s in schedule:
        _log(f"  {s.line()}")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out_dir) if out_dir is not None else DEFAULT_OUT / f"seed-{seed}-{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    res.run_dir = run_dir
    (run_dir / "seed").write_text(f"{seed}\n")
    sched_doc = {"seed": seed, "seconds": seconds, "nodes": nodes, "partitions": partitions,
                 "kinds": nemeses, "planned": schedule_json(schedule)}
    _write_json(run_dir / "schedule.json", sched_doc)
    netem = netns.netem_available()
    _log(f"netem: {'available' if netem is None else 'unavailable (' + netem + '): loss by nftables numgen, delay by a tbf slow link'}")

    client_log = logging.FileHandler(run_dir / "clients.log")
    client_log.setFormatter(logging.Formatter("%(created).3f %(threadName)s %(message)s"))
    wl.RDKAFKA_LOG.addHandler(client_log)
    wl.RDKAFKA_LOG.setLevel(logging.INFO)
    wl.RDKAFKA_LOG.propagate = False
    logging.getLogger("kafka").addHandler(client_log)
    logging.getLogger("kafka").setLevel(logging.WARNING)

    history = wl.History()
    faults: list[nem.Nemesis] = []
    final_reads: dict = {}
    final_committed: dict = {}
    # replica.lag.time.max.ms: a follower that cannot fetch leaves the ISR within a fault's
    # duration (3-15 s), which the unclean-election nemesis needs and which makes ISR shrinks and
    # expansions part of every partition and delay fault; Kafka's 30 s would outlast most faults.
    settings = {"unclean.leader.election.enable": False, "offsets.topic.num.partitions": 4,
                "group.initial.rebalance.delay.ms": 0, "replica.lag.time.max.ms": 5000}
    workers: list = []
    try:
        with netns.NetnsCluster(nodes, settings=settings, seed=seed) as c:
            _log(f"cluster: subnet {c.subnet}, nodes {c.addrs}, data {c.base}")
            try:
                _run_body(c, res, schedule, partitions, history, faults, workers, final_reads, final_committed)
            except Exception as exc:
                res.harness_errors.append(f"run aborted: {type(exc).__name__}: {exc}")
                _log(f"run aborted: {exc!r}")
            finally:
                res.faults = [n.fault_op() for n in faults]
                ops = history.ops() + res.faults
                with open(run_dir / "history.jsonl", "w") as f:
                    for op in ops:
                        f.write(json.dumps(op, sort_keys=True) + "\n")
                _write_json(run_dir / "final_reads.json",
                            {str(p): {str(k): v for k, v in reps.items()} for p, reps in final_reads.items()})
                _write_json(run_dir / "final_committed.json", {f"{g}/{p}": o for (g, p), o in final_committed.items()})
                sched_doc["executed"] = res.faults
                sched_doc["netem"] = netem
                _write_json(run_dir / "schedule.json", sched_doc)
                # Everything goes into the run directory before the cluster (and its data) goes.
                for i, node in c.nodes.items():
                    d = run_dir / "logs" / f"node{i}"
                    d.mkdir(parents=True, exist_ok=True)
                    for p in node.log_paths():
                        shutil.copy2(p, d / p.name)
                if not res.ok():
                    for i, node in c.nodes.items():
                        for p in range(partitions):
                            src = node.data_dir / f"{TOPIC}-{p}"
                            if src.is_dir():
                                shutil.copytree(src, run_dir / "data" / f"node{i}" / src.name, dirs_exist_ok=True)
    except Exception as exc:
        res.harness_errors.append(f"run aborted: {type(exc).__name__}: {exc}")
        _log(f"run aborted: {exc!r}")
    finally:
        for w in workers:
            if w.thread.is_alive():
                w.finish(timeout=5)
        wl.RDKAFKA_LOG.removeHandler(client_log)
        logging.getLogger("kafka").removeHandler(client_log)
        client_log.close()

    res.wall_s = time.monotonic() - t_wall
    text = res.report.format() if res.report is not None else "no report (the run did not get to the check)"
    extra = "\n".join(["", "faults:"] + [f"  #{f['id']} {f['kind']} nodes {f['nodes']}: {f['detail']}" for f in res.faults]
                      + ["notes:"] + [f"  {n}" for n in res.notes]
                      + (["harness errors:"] + [f"  {e}" for e in res.harness_errors] if res.harness_errors else []))
    if not run_dir.is_dir():
        res.harness_errors.append(f"the run directory {run_dir} disappeared during the run (deleted from outside)")
        run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.txt").write_text(text + "\n" + extra + "\n")
    print(text)
    print(extra)
    if res.ok() and not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
        res.run_dir = None
    else:
        res.kept = True
        (run_dir / "KEEP").touch()
        _log(f"run directory: {run_dir}")
    if not res.ok():
        _log(f"FAILED seed={seed}")
        print(f"replay: {res.replay_cmd()}")
        print(f"verdict again: .venv/bin/python tests/chaos/checker.py {run_dir}")
    _log(f"seed={seed} {'ok' if res.ok() else 'FAILED'} in {res.wall_s:.0f}s")
    return res


# ----------------------------------------------------------------------------- campaign
COLUMNS = ["run", "seed", "seconds", "nemeses", "attempted", "acknowledged", "failed", "indeterminate", "lost",
           "expected_lost", "duplicates", "inconsistent", "moved", "reordered", "backwards", "commits_lost", "verdict"]


def _cell(v) -> str:
    return "-" if v is None else str(v)


def table(results: list[RunResult]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for k, r in enumerate(results, 1):
        row = {"run": k, **r.row()}
        lines.append("| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |")
    return lines


def totals(results: list[RunResult]) -> list[str]:
    per_kind: dict[str, int] = {}
    unavail: dict[str, list[float]] = {}
    sums = {k: 0 for k in ("attempted", "acknowledged", "lost", "expected_lost", "duplicates", "inconsistent")}
    for r in results:
        for f in r.faults:
            per_kind[f["kind"]] = per_kind.get(f["kind"], 0) + 1
        row = r.row()
        for k in sums:
            sums[k] += row[k] or 0
        u = getattr(r.report, "unavailable_s", None) or {}
        kinds = {f["id"]: f["kind"] for f in r.faults}
        for fid, s in u.items():
            if s is not None and int(fid) in kinds:
                unavail.setdefault(kinds[int(fid)], []).append(float(s))
    failed = sum(1 for r in results if not r.ok())
    out = [
        f"runs: {len(results)} ({failed} failed); faults per nemesis: "
        + (", ".join(f"{k} {v}" for k, v in sorted(per_kind.items())) or "none"),
        f"operations {sums['attempted']}, acknowledged {sums['acknowledged']}, lost {sums['lost']} "
        f"(expected by acks=1 or an unclean election: {sums['expected_lost']}), duplicated {sums['duplicates']}, inconsistent offsets {sums['inconsistent']}",
        "unavailability per fault kind (p50 / max s): "
        + (", ".join(f"{k} {statistics.median(v):.1f} / {max(v):.1f}" for k, v in sorted(unavail.items())) or "none measured"),
    ]
    return out


def append_results(results: list[RunResult], argv: list[str], path: Path = RESULTS_MD) -> None:
    try:
        commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    if not path.exists():
        path.write_text("# Chaos campaign results\n\nAppended by `scripts/chaos` (tests/chaos/runner.py), one section per campaign.\n")
    lines = ["", f"## {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} commit {commit}", "",
             f"`{' '.join(['scripts/chaos', *argv])}`; netem: "
             + (f"unavailable ({netns.netem_available()}), so loss by nftables numgen and delay by a tbf slow link"
                if netns.netem_available() else "available"), ""]
    lines += table(results) + [""] + [f"- {t}" for t in totals(results)]
    for r in results:
        if not r.ok():
            lines.append(f"- seed {r.seed}: kept in `{r.run_dir}`; replay `{r.replay_cmd()}`")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="scripts/chaos", description="seeded random chaos runs against vltava serve")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=None, help="length of each run's faulty phase")
    ap.add_argument("--seconds", type=float, default=None, help="the same in seconds (wins over --minutes)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the first run (then +1 per run); "
                    "default $VTV_CHAOS_SEED or random")
    ap.add_argument("--nemesis", default=None, help=f"comma-separated kinds to draw from: {','.join(nem.KINDS)} "
                    f"(default: all but {','.join(k for k in nem.KINDS if k not in nem.DEFAULT_KINDS)})")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep every run's directory, not only failed ones")
    ap.add_argument("--no-results", action="store_true", help="do not append to tests/chaos/RESULTS.md")
    args = ap.parse_args(argv)
    reason = netns.unavailable_reason() or netns.nft_available()
    if reason:
        print(f"chaos: cannot run here: {reason}", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else (args.minutes * 60 if args.minutes is not None else 60.0)
    base = args.seed
    if base is None and os.environ.get("VTV_CHAOS_SEED"):
        base = int(os.environ["VTV_CHAOS_SEED"])
    if base is None:
        base = random.SystemRandom().randrange(1, 10**6)
    kinds = [k.strip() for k in args.nemesis.split(",") if k.strip()] if args.nemesis else None
    if kinds:
        make_schedule(base, seconds, args.nodes, args.partitions, kinds)  # rejects unknown kinds up front
    _log(f"campaign: {args.runs} run(s) of {seconds:g}s, seeds {base}..{base + args.runs - 1}")
    results = []
    for k in range(args.runs):
        r = run_once(base + k, seconds, kinds, args.nodes, keep=args.keep, partitions=args.partitions)
        results.append(r)
        print("\n".join(table([r])[2:]), flush=True)
    print()
    print("\n".join(table(results)))
    print("\n".join(totals(results)))
    if not args.no_results:
        append_results(results, argv)
        _log(f"appended to {RESULTS_MD}")
    return 0 if all(r.ok() for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
