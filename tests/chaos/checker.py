"""Verdict on one chaos run: what the clients were told against what the cluster holds afterwards.

Input (times are time.monotonic() seconds of the runner):

* the history, one dict per operation:
  send `{op, producer, client, idempotent, acks, partition, value, seq, status, offset, t_invoke,
  t_complete, error}` with status ok (acknowledged), fail (definitely not written) or info
  (indeterminate); poll `{op, consumer, generation, partition, offset, value, t}`; assign / revoke
  `{op, consumer, generation, partitions, t}`; seek `{op, consumer, partition, offset, t}`; commit
  `{op, consumer, group, partition, offset, status, t}` (offset: the next one to read); fault
  `{op, id, kind, nodes, t_start, t_end, detail}`. Other operations are ignored;
* `final_reads`: `{partition: {replica: [[offset, value], ...]}}`, every partition read from log
  start to log end on every replica once the faults are healed;
* `final_committed`: `{(group, partition): offset}` (or `{"group/partition": offset}`) read back
  at the end.

What is checked (each finding names the value, producer, partition, offsets and replicas involved):

* lost: an acknowledged value absent from every replica of its partition;
* divergent: an acknowledged value present on some replicas and absent from another one beyond
  that replica's log range (inside the range the gap is an inconsistent offset instead, so one
  root cause is reported once);
* duplicates: one value at two or more offsets, or in two partitions (kept apart for producers
  without idempotence, whose retries may write twice by design);
* moved: an acknowledged value not at its acknowledged offset, or any value found in a partition
  it was not sent to;
* inconsistent offsets: one (partition, offset) holding two values across replicas, between the
  replicas and a consumer's poll or between two polls; an offset missing from one replica inside
  both replicas' ranges; a polled record no replica holds;
* reordered: the values of one idempotent producer in one partition out of `seq` order (the
  fewest values that have to move: all but a longest increasing run);
* never sent: a value in a log or a poll that no send carries;
* failed present: a value whose send was reported definitely not written, found in a log or poll;
* consumer backwards / skips: within one continuous assignment of a partition to a consumer (no
  assign, revoke, generation change or seek in between), a poll at or below the previous one, or
  a jump over an offset whose final value was acknowledged and that it did not poll in that assignment;
* commits lost / phantom: the committed offset read back at the end against the commits made.
  The expected final offset is the last `ok` commit in time (not the highest: a consumer that
  seeks back may commit a lower offset) or any `info` commit (it may have landed later). Below
  the last ok commit, or equal to an older ok commit, is a lost commit; any other value is a
  phantom (an offset nobody committed).

Losses the configuration allows are reported in `expected_losses`, not as anomalies: acks=1 with
a leader lost before its followers fetched (every acks=1 send), an unclean leader election (the
sends to the partitions a fault op names in `expected_loss: {partitions, t_from, t_to}` that were
outstanding within that window; the unclean-election nemesis writes it), or `expect_loss=True`
(every send). What is allowed: lost and moved acknowledged writes of such sends, polls of such
values that the final log no longer holds, and consumer jumps that start from such a poll.

Unavailability per fault: within [fault start, next later fault start or end of the writes], the
longest stretch without an acknowledgement on one partition while sends to it were outstanding
(max over partitions), and the same over all partitions together.

Replay a saved run's verdict: `python tests/chaos/checker.py RUN_DIR [--expect-loss]` (exit 1 when
the run has an unexpected anomaly).
"""

from __future__ import annotations

import bisect
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

CAP = 50  # findings listed per kind in format()

# (count attribute, list attribute, heading) of every anomaly kind that fails a run.
ANOMALIES = [
    ("lost", "lost_writes", "acknowledged values lost (absent from every replica of their partition)"),
    ("divergent", "divergences", "acknowledged values missing from some replicas (replica divergence)"),
    ("duplicates", "duplicate_values", "duplicates of idempotent producers"),
    ("inconsistent_offsets", "inconsistencies", "inconsistent offsets"),
    ("moved", "moved_writes", "moved values"),
    ("reordered", "reorders", "values out of seq order (idempotent producer, one partition)"),
    ("never_sent", "unknown_values", "values no send carries"),
    ("failed_present", "failed_writes_present", "values of failed sends present"),
    ("consumer_backwards", "backwards", "consumer positions going backwards"),
    ("consumer_skipped", "skips", "consumers skipping acknowledged values"),
    ("commits_lost", "lost_commits", "committed offsets lost"),
    ("commits_phantom", "phantom_commits", "committed offsets nobody committed"),
    ("history_errors", "errors", "history errors (verdict incomplete)"),
]


@dataclass
class Report:
    attempted: int = 0
    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0
    indeterminate_present: int = 0
    indeterminate_absent: int = 0
    per_client: dict[str, dict[str, int]] = field(default_factory=dict)
    polls: int = 0
    commits: int = 0

    lost: int = 0
    divergent: int = 0
    duplicates: int = 0
    duplicates_nonidempotent: int = 0
    inconsistent_offsets: int = 0
    moved: int = 0
    reordered: int = 0
    reordered_nonidempotent: int = 0
    never_sent: int = 0
    failed_present: int = 0
    consumer_backwards: int = 0
    consumer_skipped: int = 0
    commits_lost: int = 0
    commits_phantom: int = 0
    history_errors: int = 0

    lost_writes: list[dict] = field(default_factory=list)
    divergences: list[dict] = field(default_factory=list)
    duplicate_values: list[dict] = field(default_factory=list)
    nonidempotent_duplicates: list[dict] = field(default_factory=list)
    inconsistencies: list[dict] = field(default_factory=list)
    moved_writes: list[dict] = field(default_factory=list)
    reorders: list[dict] = field(default_factory=list)
    nonidempotent_reorders: list[dict] = field(default_factory=list)
    unknown_values: list[dict] = field(default_factory=list)
    failed_writes_present: list[dict] = field(default_factory=list)
    backwards: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    lost_commits: list[dict] = field(default_factory=list)
    phantom_commits: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    expected_losses: list[dict] = field(default_factory=list)

    # fault id -> seconds (see the module docstring)
    unavailable_s: dict[int, float] = field(default_factory=dict)
    unavailable_any_s: dict[int, float] = field(default_factory=dict)
    # one dict per fault: id, kind, nodes, t_start, t_end, window, unavailable_s, partition, unavailable_any_s
    faults: list[dict] = field(default_factory=list)
    # partition -> replica -> [first offset, end offset, records] of the final reads
    replicas: dict[int, dict[Any, list]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    t0: float | None = None  # earliest time in the history, for relative times in format()

    def ok(self) -> bool:
        return all(getattr(self, count) == 0 for count, _, _ in ANOMALIES)

    def unavailable_max(self) -> float:
        return max(self.unavailable_s.values(), default=0.0)

    def consumer_anomalies(self) -> int:
        return self.consumer_backwards + self.consumer_skipped

    def summary_row(self) -> dict:
        return {
            "attempted": self.attempted,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "indeterminate": self.indeterminate,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "inconsistent": self.inconsistent_offsets,
            "moved": self.moved,
            "reordered": self.reordered,
            "consumer_anomalies": self.consumer_anomalies(),
            "commits_lost": self.commits_lost,
            "expected_losses": len(self.expected_losses),
            "faults": "+".join(f["kind"] for f in self.faults) or "none",
            "unavailable_max_s": round(self.unavailable_max(), 2),
            "divergent": self.divergent,
            "never_sent": self.never_sent,
            "failed_present": self.failed_present,
            "commits_phantom": self.commits_phantom,
            "history_errors": self.history_errors,
            "duplicates_nonidempotent": self.duplicates_nonidempotent,
            "ok": self.ok(),
        }

    def as_dict(self) -> dict:
        """Everything, JSON-serialisable (for saving next to the run)."""
        d = asdict(self)
        d["replicas"] = {str(p): {str(r): v for r, v in reps.items()} for p, reps in self.replicas.items()}
        d["unavailable_s"] = {str(k): v for k, v in self.unavailable_s.items()}
        d["unavailable_any_s"] = {str(k): v for k, v in self.unavailable_any_s.items()}
        d["ok"] = self.ok()
        return d

    def format(self) -> str:
        rel = (lambda t: t - self.t0) if self.t0 is not None else (lambda t: t)
        out = [
            f"operations: {self.attempted} sends attempted, {self.acknowledged} acknowledged, {self.failed} failed, "
            f"{self.indeterminate} indeterminate ({self.indeterminate_present} in the log, {self.indeterminate_absent} not)"
        ]
        for client, c in sorted(self.per_client.items()):
            out.append(
                f"  {client}: {c['attempted']} attempted, {c['acknowledged']} acknowledged, "
                f"{c['failed']} failed, {c['indeterminate']} indeterminate"
            )
        out.append(f"consumers: {self.polls} records polled, {self.commits} commits")
        out.append("anomalies: " + ", ".join(f"{count} {getattr(self, count)}" for count, _, _ in ANOMALIES))
        out.append(
            f"allowed: expected losses {len(self.expected_losses)} (acks=1 / unclean election), "
            f"duplicates of non-idempotent producers {self.duplicates_nonidempotent}, "
            f"reorderings of non-idempotent producers {self.reordered_nonidempotent}"
        )
        for f in self.faults:
            lo, hi = f["window"]
            part = f" (partition {f['partition']})" if f["partition"] is not None else ""
            end = f"{rel(f['t_end']):.1f}" if f["t_end"] is not None else "-"
            out.append(
                f"fault {f['id']} {f['kind']} nodes {f['nodes']} {rel(f['t_start']):.1f}..{end}s "
                f"(window {rel(lo):.1f}..{rel(hi):.1f}s): unavailable {f['unavailable_s']:.2f}s{part}, "
                f"no acknowledgement anywhere {f['unavailable_any_s']:.2f}s; {f['detail']}"
            )
        ends = {p: {tuple(v[:2]) for v in reps.values()} for p, reps in self.replicas.items()}
        for p in sorted(ends):
            if len(ends[p]) > 1:
                out.append(f"partition {p}: replica ranges differ {self.replicas[p]}")

        def section(title: str, items: list[dict]) -> None:
            if not items:
                return
            out.append(f"== {title}: {len(items)}")
            for item in items[:CAP]:
                out.append("  " + _line(item))
            if len(items) > CAP:
                out.append(f"  ... and {len(items) - CAP} more")

        for _, attr, title in ANOMALIES:
            section(title, getattr(self, attr))
        section("expected losses (allowed by acks=1 or unclean election)", self.expected_losses)
        section("duplicates of non-idempotent producers (allowed)", self.nonidempotent_duplicates)
        section("reorderings of non-idempotent producers (allowed)", self.nonidempotent_reorders)
        for n in self.notes:
            out.append(f"note: {n}")
        if self.ok():
            out.append("VERDICT: ok")
        else:
            bad = [f"{count}={getattr(self, count)}" for count, _, _ in ANOMALIES if getattr(self, count)]
            out.append("VERDICT: FAILED (" + ", ".join(bad) + ")")
        return "\n".join(out)


def _line(item: dict) -> str:
    parts = []
    for k, v in item.items():
        if isinstance(v, float):
            v = f"{v:.3f}"
        elif isinstance(v, (list, dict, tuple)):
            v = json.dumps(v, default=str, separators=(",", ":"))
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _int_key(k: Any) -> Any:
    try:
        return int(k)
    except (TypeError, ValueError):
        return k


def _norm_reads(final_reads: dict) -> dict[int, dict[Any, list[tuple[int, Any]]]]:
    return {
        _int_key(p): {_int_key(r): [(int(o), v) for o, v in recs] for r, recs in reps.items()}
        for p, reps in final_reads.items()
    }


def _norm_committed(final_committed: dict) -> dict[tuple[str, int], int | None]:
    out = {}
    for k, off in final_committed.items():
        if isinstance(k, str):
            group, _, p = k.rpartition("/")
            k = (group, int(p))
        else:
            k = (k[0], int(k[1]))
        out[k] = None if off is None or int(off) < 0 else int(off)
    return out


def _in_time_order(ops: list[tuple[int, dict]]) -> list[dict]:
    """By `t`, history order among equal times; history order alone when some op has no time."""
    if all(op.get("t") is not None for _, op in ops):
        ops = sorted(ops, key=lambda x: (x[1]["t"], x[0]))
    return [op for _, op in ops]


def _longest_stall(intervals: list[tuple[float, float]], acks: list[float], lo: float, hi: float) -> float:
    """Longest stretch of [lo, hi] covered without a break by outstanding sends and holding no
    acknowledgement inside; `acks` sorted."""
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi)
    best = 0.0
    i = 0
    while i < len(clipped):
        start, end = clipped[i]
        i += 1
        while i < len(clipped) and clipped[i][0] <= end:
            end = max(end, clipped[i][1])
            i += 1
        cuts = acks[bisect.bisect_right(acks, start) : bisect.bisect_left(acks, end)]
        points = [start, *cuts, end]
        best = max(best, max(b - a for a, b in zip(points, points[1:])))
    return best


def _lis(seqs: list[int]) -> set[int]:
    """Indices of one longest strictly increasing subsequence."""
    tail_vals: list[int] = []
    tail_idx: list[int] = []
    prev = [-1] * len(seqs)
    for i, s in enumerate(seqs):
        k = bisect.bisect_left(tail_vals, s)
        if k == len(tail_vals):
            tail_vals.append(s)
            tail_idx.append(i)
        else:
            tail_vals[k] = s
            tail_idx[k] = i
        prev[i] = tail_idx[k - 1] if k else -1
    keep = set()
    i = tail_idx[-1] if tail_idx else -1
    while i != -1:
        keep.add(i)
        i = prev[i]
    return keep


class _Run:
    """One check: the stages share the indexes built from the sends and the final reads."""

    def __init__(self, history: list[dict], final_reads: dict, expect_loss: bool):
        self.history = history
        self.expect_loss = expect_loss
        self.rep = Report()
        times = [t for op in history for t in (op.get("t"), op.get("t_invoke"), op.get("t_start")) if t is not None]
        self.rep.t0 = min(times, default=None)
        self.reads = _norm_reads(final_reads)
        self.sends: dict[Any, dict] = {}  # value -> its send
        self.rep_map: dict[int, dict[Any, dict[int, Any]]] = {}  # partition -> replica -> offset -> value
        self.ranges: dict[int, dict[Any, tuple[int, int] | None]] = {}  # [first, end) per replica
        self.merged: dict[int, dict[int, Any]] = {}  # partition -> offset -> the value most replicas hold
        self.loc: dict[Any, list[tuple[int, int]]] = {}  # value -> (partition, offset) in the merged view
        self.present: dict[Any, dict[int, set]] = {}  # value -> partition -> replicas holding it
        self.roffs: dict[Any, dict[int, set]] = {}  # value -> partition -> offsets on any replica
        self.polled: dict[tuple[int, int], dict[Any, list]] = {}  # (partition, offset) -> value -> consumers
        self.truncated: set[tuple[int, int, Any]] = set()  # polls the final log lost, allowed by configuration
        self.incons: dict[tuple[int, int], dict] = {}  # (partition, offset) -> finding

        # Faults that announce an expected loss (an unclean election): partitions and a window.
        self.loss_windows = [
            (op.get("id"), set(w.get("partitions") or ()), w.get("t_from"), w.get("t_to"))
            for op in history if op.get("op") == "fault" and (w := op.get("expected_loss"))
            and w.get("t_from") is not None and w.get("t_to") is not None
        ]

    def loss_window(self, op: dict):
        """The fault whose expected-loss window covers this send: same partition, and the send was
        outstanding at some moment of the window."""
        a, b = op.get("t_invoke"), op.get("t_complete")
        for fid, parts, lo, hi in self.loss_windows:
            if op.get("partition") in parts and a is not None and a <= hi and (b is None or b >= lo):
                return fid
        return None

    def loss_expected(self, op: dict) -> bool:
        return self.expect_loss or str(op.get("acks")) == "1" or self.loss_window(op) is not None

    def reason(self, op: dict | None = None) -> str:
        if self.expect_loss:
            return "expect_loss"
        if op is not None and str(op.get("acks")) != "1" and (fid := self.loss_window(op)) is not None:
            return f"unclean election (fault {fid})"
        return "acks=1"

    @staticmethod
    def who(op: dict) -> dict:
        return {"producer": op.get("producer"), "client": op.get("client"), "seq": op.get("seq")}

    def incon(self, p: int, o: int, reason: str) -> dict:
        f = self.incons.setdefault((p, o), {"partition": p, "offset": o, "reasons": []})
        if reason not in f["reasons"]:
            f["reasons"].append(reason)
        return f

    def count_sends(self) -> None:
        rep = self.rep
        for op in self.history:
            if op.get("op") != "send":
                continue
            status = op.get("status")
            rep.attempted += 1
            c = rep.per_client.setdefault(
                str(op.get("client")), {"attempted": 0, "acknowledged": 0, "failed": 0, "indeterminate": 0}
            )
            c["attempted"] += 1
            name = {"ok": "acknowledged", "fail": "failed", "info": "indeterminate"}.get(status)
            if name is None:
                rep.errors.append({"what": "send with unknown status", "value": op.get("value"), "status": status})
            else:
                setattr(rep, name, getattr(rep, name) + 1)
                c[name] += 1
            v = op.get("value")
            if v in self.sends:
                rep.errors.append(
                    {"what": "value sent twice", "value": v, "producers": [self.sends[v].get("producer"), op.get("producer")]}
                )
            else:
                self.sends[v] = op

    def index_logs(self) -> None:
        """Indexes the final reads; replicas disagreeing on an offset, or one missing an offset
        inside its range that another holds, are inconsistent offsets."""
        for p, reps in self.reads.items():
            self.rep_map[p], self.ranges[p], self.rep.replicas[p] = {}, {}, {}
            for r, recs in sorted(reps.items(), key=lambda kv: str(kv[0])):
                m: dict[int, Any] = {}
                for o, v in recs:
                    if o in m and m[o] != v:
                        self.incon(p, o, f"replica {r} lists the offset twice").setdefault("replicas", {})[str(r)] = [m[o], v]
                    m.setdefault(o, v)
                self.rep_map[p][r] = m
                self.ranges[p][r] = (min(m), max(m) + 1) if m else None
                self.rep.replicas[p][r] = [*(self.ranges[p][r] or (None, None)), len(m)]
            self.merged[p] = {}
            for o in sorted(set().union(*self.rep_map[p].values())):
                holders = {r: m[o] for r, m in self.rep_map[p].items() if o in m}
                tally: dict[Any, int] = {}
                for v in holders.values():
                    tally[v] = tally.get(v, 0) + 1
                self.merged[p][o] = max(tally, key=lambda v: tally[v])  # ties: the first replica's value
                if len(tally) > 1:
                    self.incon(p, o, "replicas hold different values")["replicas"] = {str(r): v for r, v in holders.items()}
                missing = [r for r, rg in self.ranges[p].items() if r not in holders and rg and rg[0] <= o < rg[1]]
                if missing:
                    f = self.incon(p, o, "missing on replicas inside their ranges")
                    f["replicas"] = {str(r): v for r, v in holders.items()}
                    f["missing_on"] = missing
        for p in sorted(self.merged, key=str):
            for o, v in sorted(self.merged[p].items()):
                self.loc.setdefault(v, []).append((p, o))
        for p, reps in self.rep_map.items():
            for r, m in reps.items():
                for o, v in m.items():
                    self.present.setdefault(v, {}).setdefault(p, set()).add(r)
                    self.roffs.setdefault(v, {}).setdefault(p, set()).add(o)

    def check_polls(self) -> None:
        """Every polled record against the replicas at its offset."""
        for op in self.history:
            if op.get("op") == "poll":
                self.rep.polls += 1
                cs = self.polled.setdefault((op["partition"], op["offset"]), {}).setdefault(op["value"], [])
                if op.get("consumer") not in cs:
                    cs.append(op.get("consumer"))
        for (p, o), vals in sorted(self.polled.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            if not self.rep_map.get(p):
                continue  # an unread partition is a history error (check_writes)
            holders = {r: m[o] for r, m in self.rep_map[p].items() if o in m}
            if (p, o) in self.incons:
                self.incons[(p, o)]["polled"] = {str(v): cs for v, cs in vals.items()}
                continue
            final = set(holders.values())
            differing = {v: cs for v, cs in vals.items() if final != {v}}
            if not differing:
                continue
            if all(v in self.sends and self.loss_expected(self.sends[v]) for v in differing):
                for v, cs in differing.items():
                    self.truncated.add((p, o, v))
                    self.rep.expected_losses.append(
                        {"kind": "polled, then truncated", "value": v, **self.who(self.sends[v]), "partition": p,
                         "offset": o, "consumers": cs, "final": next(iter(final), None),
                         "acks": self.sends[v].get("acks"), "reason": self.reason(self.sends[v])}
                    )
                continue
            f = self.incon(p, o, "a consumer polled another value" if holders else "polled, absent from every replica")
            f["replicas"] = {str(r): v for r, v in holders.items()}
            f["polled"] = {str(v): cs for v, cs in vals.items()}

    def check_writes(self) -> None:
        """Each send against the final logs: lost, divergent, moved, failed but present."""
        rep = self.rep
        unread: dict[int, int] = {}
        for v, op in self.sends.items():
            p, status = op.get("partition"), op.get("status")
            if status == "info":
                if v in self.present:
                    rep.indeterminate_present += 1
                else:
                    rep.indeterminate_absent += 1
            elif status == "fail":
                where = [[q, o] for q, offs in sorted(self.roffs.get(v, {}).items(), key=lambda kv: str(kv[0]))
                         for o in sorted(offs)]
                seen_by = sorted({c for vals in self.polled.values() if v in vals for c in vals[v]}, key=str)
                if where or seen_by:
                    rep.failed_writes_present.append(
                        {"value": v, **self.who(op), "partition": p, "found_at": where, "polled_by": seen_by,
                         "error": op.get("error")}
                    )
            if status != "ok":
                continue
            if not self.rep_map.get(p):
                unread[p] = unread.get(p, 0) + 1
                continue
            offsets = sorted(self.roffs.get(v, {}).get(p, ()))
            if not offsets:
                finding = {"value": v, **self.who(op), "partition": p, "acked_offset": op.get("offset"),
                           "acks": op.get("acks")}
                if self.loss_expected(op):
                    rep.expected_losses.append({"kind": "lost", **finding, "reason": self.reason(op)})
                else:
                    rep.lost_writes.append(finding)
                continue
            # inside a replica's range a missing value is an inconsistent offset (index_logs)
            absent = [r for r, rg in self.ranges[p].items()
                      if r not in self.present[v][p] and (rg is None or not rg[0] <= offsets[0] < rg[1])]
            if absent:
                rep.divergences.append(
                    {"value": v, **self.who(op), "partition": p, "offset": offsets[0],
                     "present_on": sorted(self.present[v][p], key=str), "absent_on": absent,
                     "absent_replica_ranges": {str(r): self.ranges[p][r] for r in absent}}
                )
            acked = op.get("offset")
            if acked is not None and acked not in offsets:
                finding = {"value": v, **self.who(op), "partition": p, "acked_offset": acked, "final_offsets": offsets}
                if self.loss_expected(op):
                    rep.expected_losses.append({"kind": "moved", **finding, "reason": self.reason(op)})
                else:
                    rep.moved_writes.append(finding)
        for p, n in sorted(unread.items(), key=lambda kv: str(kv[0])):
            rep.errors.append({"what": "no final read of a written partition", "partition": p, "acknowledged_unverified": n})

    def check_placement(self) -> None:
        """Values in a partition they were not sent to, at two places, or sent by nobody."""
        rep = self.rep
        unknown: dict[Any, dict] = {}
        for v, where in self.loc.items():
            op = self.sends.get(v)
            if op is None:
                unknown[v] = {"value": v, "found_at": [list(x) for x in where], "polled_by": []}
                continue
            elsewhere = [list(x) for x in where if x[0] != op.get("partition")]
            if elsewhere:
                rep.moved_writes.append(
                    {"value": v, **self.who(op), "partition": op.get("partition"), "status": op.get("status"),
                     "found_in_other_partitions": elsewhere}
                )
            if len(where) > 1:
                finding = {"value": v, **self.who(op), "at": [list(x) for x in where], "acked_offset": op.get("offset")}
                (rep.duplicate_values if op.get("idempotent") else rep.nonidempotent_duplicates).append(finding)
        for (p, o), vals in self.polled.items():
            for v, cs in vals.items():
                if v not in self.sends:
                    u = unknown.setdefault(v, {"value": v, "found_at": [], "polled_by": []})
                    u["polled_by"].append({"partition": p, "offset": o, "consumers": cs})
        rep.unknown_values = list(unknown.values())

    def check_order(self) -> None:
        """Per producer and partition, the values by offset against their seq: all but one longest
        increasing run are out of order; each is listed with a value it is inverted with."""
        groups: dict[tuple[Any, int], list[tuple[int, int, Any]]] = {}
        for p in sorted(self.merged, key=str):
            seen: set[Any] = set()
            for o, v in sorted(self.merged[p].items()):
                op = self.sends.get(v)
                if op is None or op.get("seq") is None or v in seen:
                    continue
                seen.add(v)
                groups.setdefault((op.get("producer"), p), []).append((o, op["seq"], v))
        for (producer, p), items in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
            seqs = [s for _, s, _ in items]
            keep = _lis(seqs)
            if len(keep) == len(items):
                continue
            n = len(items)
            prefix_max, best = [-1] * n, -1  # index of the largest seq before i
            for i in range(n):
                prefix_max[i] = best
                if best == -1 or seqs[i] > seqs[best]:
                    best = i
            suffix_min, best = [-1] * n, -1  # index of the smallest seq after i
            for i in range(n - 1, -1, -1):
                suffix_min[i] = best
                if best == -1 or seqs[i] < seqs[best]:
                    best = i
            idempotent = bool(self.sends[items[0][2]].get("idempotent"))
            for i, (o, s, v) in enumerate(items):
                if i in keep:
                    continue
                j = prefix_max[i] if prefix_max[i] != -1 and seqs[prefix_max[i]] > s else suffix_min[i]
                finding = {"value": v, "producer": producer, "partition": p, "seq": s, "offset": o,
                           "inverted_with": {"value": items[j][2], "seq": items[j][1], "offset": items[j][0]}}
                (self.rep.reorders if idempotent else self.rep.nonidempotent_reorders).append(finding)

    def check_consumers(self) -> None:
        """Within one continuous assignment: no poll at or below the previous one, no jump over an
        acknowledged value not polled in this assignment."""
        acked_offsets = {
            p: [o for o, v in sorted(m.items()) if v in self.sends and self.sends[v].get("status") == "ok"]
            for p, m in self.merged.items()
        }
        by_consumer: dict[Any, list[tuple[int, dict]]] = {}
        for i, op in enumerate(self.history):
            if op.get("op") in ("poll", "assign", "revoke", "seek"):
                by_consumer.setdefault(op.get("consumer"), []).append((i, op))
        outside = 0

        def new_run(gen: Any, last: int | None = None, seek: int | None = None) -> dict:
            return {"gen": gen, "last": last, "last_value": None, "seen": set(), "seek": seek}

        for consumer, indexed in by_consumer.items():
            runs: dict[int, dict] = {}  # partition -> its current continuous assignment
            assigned_ever = False
            for op in _in_time_order(indexed):
                kind = op["op"]
                if kind in ("assign", "revoke"):
                    runs = {}
                    if kind == "assign":
                        assigned_ever = True
                        runs = {p: new_run(op.get("generation")) for p in op.get("partitions", [])}
                    continue
                p = op["partition"]
                if kind == "seek":
                    o = op["offset"]
                    known = o is not None and o >= 0  # not a symbolic earliest/latest
                    runs[p] = new_run(runs[p]["gen"] if p in runs else None, o - 1 if known else None, o)
                    continue
                o, v, gen = op["offset"], op["value"], op.get("generation")
                run = runs.get(p)
                if run is None or (gen is not None and run["gen"] is not None and gen != run["gen"]):
                    if run is None and assigned_ever:
                        outside += 1
                    run = runs[p] = new_run(gen)
                if run["gen"] is None:
                    run["gen"] = gen
                last = run["last"]
                finding, target = None, None
                if last is not None and o <= last:
                    finding = {"consumer": consumer, "partition": p, "offset": o, "value": v,
                               "previous_offset": last, "generation": gen, "t": op.get("t")}
                    if run["last_value"] is None:
                        finding["after_seek_to"] = run["seek"]
                    target = self.rep.backwards
                elif last is not None and o > last + 1:
                    offs = acked_offsets.get(p, [])
                    jumped = [x for x in offs[bisect.bisect_right(offs, last) : bisect.bisect_left(offs, o)]
                              if x not in run["seen"]]
                    if jumped:
                        finding = {"consumer": consumer, "partition": p, "from_offset": last, "to_offset": o,
                                   "skipped": len(jumped),
                                   "skipped_records": [[x, self.merged[p][x]] for x in jumped[:10]],
                                   "generation": gen, "t": op.get("t")}
                        target = self.rep.skips
                if finding is not None:
                    if (p, o, v) in self.truncated or (p, last, run["last_value"]) in self.truncated:
                        self.rep.expected_losses.append(
                            {"kind": "consumer moved past a truncated read", **finding,
                             "reason": self.reason(self.sends.get(v) or self.sends.get(run["last_value"]))}
                        )
                    else:
                        target.append(finding)
                run["last"], run["last_value"] = o, v
                run["seen"].add(o)
        if outside:
            self.rep.notes.append(f"{outside} polls of a partition the consumer was not assigned (checked as a new assignment)")

    def check_commits(self, final_committed: dict | None) -> None:
        """The final committed offset must be the last ok commit or one of the info commits."""
        rep = self.rep
        commit_ops = _in_time_order([(i, op) for i, op in enumerate(self.history) if op.get("op") == "commit"])
        rep.commits = len(commit_ops)
        if final_committed is None:
            if commit_ops:
                rep.notes.append("committed offsets not read back at the end: commits not checked")
            return
        finals = _norm_committed(final_committed)
        per_key: dict[tuple[str, int], dict[str, list]] = {}
        for op in commit_ops:
            k = (op.get("group"), op.get("partition"))
            per_key.setdefault(k, {}).setdefault(op.get("status"), []).append(op["offset"])
        for k in sorted(set(per_key) | set(finals), key=lambda k: (str(k[0]), str(k[1]))):
            c = per_key.get(k, {})
            oks, infos = c.get("ok", []), c.get("info", [])
            final = finals.get(k)
            if (final is None and not oks) or (oks and final == oks[-1]) or final in infos:
                continue
            finding = {"group": k[0], "partition": k[1], "final": final, "last_ok": oks[-1] if oks else None,
                       "highest_ok": max(oks) if oks else None, "info": sorted(set(infos)),
                       "failed": sorted(set(c.get("fail", [])))}
            if oks and (final is None or final < oks[-1] or final in oks):
                rep.lost_commits.append(finding)
            else:
                rep.phantom_commits.append(finding)

    def measure_unavailability(self) -> None:
        rep = self.rep
        send_ops = [op for op in self.history if op.get("op") == "send" and op.get("t_invoke") is not None]
        # Availability is what acks=all writers see: an isolated leader may go on acknowledging
        # acks=1 writes (that are then lost) while no acks=all write gets through, and counting
        # those would hide the outage. Only a history without acks=all sends falls back to all.
        strong = [op for op in send_ops if str(op.get("acks", "all")) != "1"]
        send_ops = strong or send_ops
        t_last = max((op["t_complete"] if op.get("t_complete") is not None else op["t_invoke"] for op in send_ops),
                     default=None)
        outstanding: dict[Any, list[tuple[float, float]]] = {}
        acks: dict[Any, list[float]] = {}
        for op in send_ops:
            a, b = op["t_invoke"], op.get("t_complete")
            outstanding.setdefault(op.get("partition"), []).append((a, b if b is not None else t_last))
            if op.get("status") == "ok":
                acks.setdefault(op.get("partition"), []).append(b if b is not None else a)
        for ts in acks.values():
            ts.sort()
        all_out = [x for iv in outstanding.values() for x in iv]
        all_acks = sorted(t for ts in acks.values() for t in ts)
        faults = []
        for op in self.history:
            if op.get("op") != "fault":
                continue
            if op.get("t_start") is None:
                rep.errors.append({"what": "fault without a start time", "id": op.get("id"), "kind": op.get("kind")})
            else:
                faults.append(op)
        faults.sort(key=lambda op: op["t_start"])
        for f in faults:
            lo = f["t_start"]
            # faults starting together (composed) share one window
            hi = min([g["t_start"] for g in faults if g["t_start"] > lo] + ([t_last] if t_last is not None else []),
                     default=lo)
            hi = max(hi, lo)
            worst, worst_p = 0.0, None
            for p in sorted(outstanding, key=str):
                s = _longest_stall(outstanding[p], acks.get(p, []), lo, hi)
                if s > worst:
                    worst, worst_p = s, p
            anywhere = _longest_stall(all_out, all_acks, lo, hi)
            rep.unavailable_s[f["id"]] = worst
            rep.unavailable_any_s[f["id"]] = anywhere
            rep.faults.append(
                {"id": f["id"], "kind": f.get("kind"), "nodes": f.get("nodes"), "t_start": lo, "t_end": f.get("t_end"),
                 "window": [lo, hi], "unavailable_s": worst, "partition": worst_p, "unavailable_any_s": anywhere,
                 "detail": f.get("detail")}
            )

    def finish(self) -> Report:
        rep = self.rep
        rep.inconsistencies = [self.incons[k] for k in sorted(self.incons, key=lambda k: (str(k[0]), k[1]))]
        for count, attr, _ in ANOMALIES:
            setattr(rep, count, len(getattr(rep, attr)))
        rep.duplicates_nonidempotent = len(rep.nonidempotent_duplicates)
        rep.reordered_nonidempotent = len(rep.nonidempotent_reorders)
        return rep


def check(
    history: list[dict],
    final_reads: dict,
    final_committed: dict | None = None,
    expect_loss: bool = False,
) -> Report:
    run = _Run(history, final_reads, expect_loss)
    run.count_sends()
    run.index_logs()
    run.check_polls()  # before the consumers: it finds the truncated reads they may start from
    run.check_writes()
    run.check_placement()
    run.check_order()
    run.check_consumers()
    run.check_commits(final_committed)
    run.measure_unavailability()
    return run.finish()


class RunData(NamedTuple):
    """The arguments of `check` read from a run directory: `check(*load_run(d))`."""

    history: list[dict]
    final_reads: dict[int, dict[int, list]]
    final_committed: dict[tuple[str, int], int] | None


def load_run(run_dir: str | Path) -> RunData:
    d = Path(run_dir)
    history = []
    with open(d / "history.jsonl") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    history.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{d / 'history.jsonl'}:{n}: {e}") from None
    raw = json.loads((d / "final_reads.json").read_text())
    final_reads = {_int_key(p): {_int_key(r): [list(x) for x in recs] for r, recs in reps.items()} for p, reps in raw.items()}
    committed = None
    if (d / "final_committed.json").exists():
        committed = _norm_committed(json.loads((d / "final_committed.json").read_text()))
    return RunData(history, final_reads, committed)


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    flags = {a for a in argv if a.startswith("--")}
    if len(args) != 1 or flags - {"--expect-loss"}:
        print("usage: checker.py RUN_DIR [--expect-loss]", file=sys.stderr)
        return 2
    report = check(*load_run(args[0]), expect_loss="--expect-loss" in flags)
    print(report.format())
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
