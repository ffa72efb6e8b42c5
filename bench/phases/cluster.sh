#!/usr/bin/env bash
# Phase "cluster" (not in the default list: BENCH_PHASES=cluster bench/run.sh): figures of the
# three-node cluster on 127.0.0.1, each beside its baseline from the same run.
#   C1  CreateTopics of BENCH_CLUSTER_PARTITIONS (1,000) partitions, RF 1, through node 1 of three
#       combined nodes: time to the response and until every broker's Metadata shows every
#       partition with a leader; baseline: the same on a lone `vltava serve`
#   C2  metadata propagation lag: BENCH_CLUSTER_LAG_TOPICS (200) one-partition topics created one
#       after another through node 1; per topic, the time from the CreateTopics response until
#       each broker's Metadata shows it; p50 / p99 of the slowest broker
#   C3  controller failover: SIGKILL of the active controller until a CreateTopics through a
#       survivor is accepted, BENCH_CLUSTER_FAILOVERS (3) times, the victim restarted in between
#   C4  single-node produce / consume MB/s of the binary under test against the one built from
#       BENCH_CLUSTER_BEFORE_REV (00eb142, before the cluster work), alternated
# The measuring is done by bench/lib/cluster.py (raw Kafka wire requests); the figures go to
# results, and a Markdown table to report.md, which run.sh prints after its own tables.
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

# The phase's own stderr, for the cleanup: a signal that arrives while a client runs with its
# stderr redirected to a file has the EXIT trap run with that redirection in place.
exec 9>&2
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DRIVER="$REPO_DIR/bench/lib/cluster.py"
if [[ -n "${BENCH_PYTHON:-}" ]]; then
    PY="$BENCH_PYTHON"
elif [[ -x "$REPO_DIR/.venv/bin/python" ]]; then
    PY="$REPO_DIR/.venv/bin/python"
else
    PY="$(command -v python3)" || die "no python3 for bench/lib/cluster.py"
fi

NODES=3
BIG_PARTITIONS="${BENCH_CLUSTER_PARTITIONS:-1000}"
C1_REPS="${BENCH_CLUSTER_CREATE_REPS:-3}"
LAG_TOPICS="${BENCH_CLUSTER_LAG_TOPICS:-200}"
FAILOVERS="${BENCH_CLUSTER_FAILOVERS:-3}"
TP_COUNT="${BENCH_CLUSTER_COUNT:-3000000}"
TP_ROUNDS="${BENCH_CLUSTER_ROUNDS:-3}"
BEFORE_REV="${BENCH_CLUSTER_BEFORE_REV:-00eb142}"
BUILD_TIMEOUT="${BENCH_CLUSTER_BUILD_TIMEOUT:-3600}"
for n in BIG_PARTITIONS C1_REPS LAG_TOPICS FAILOVERS TP_COUNT TP_ROUNDS BUILD_TIMEOUT; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
REPORT_FILE="$PHASE_DIR/report.md"
: >"$REPORT_FILE"
AFTER_BIN="$VLTAVA"
# What the binary under test is called in the report: HEAD when run.sh built it, else the
# binary's path (BENCH_VLTAVA), unless BENCH_CLUSTER_AFTER_LABEL names it.
if [[ -n "${BENCH_CLUSTER_AFTER_LABEL:-}" ]]; then
    AFTER_LABEL="$BENCH_CLUSTER_AFTER_LABEL"
elif [[ -n "${BENCH_VLTAVA:-}" ]]; then
    AFTER_LABEL="$VLTAVA"
else
    AFTER_LABEL="HEAD $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo "?")"
fi

# driver_try NAME SUBCOMMAND ARGS...: bench/lib/cluster.py, bounded; OUT is its JSON; the
# status is cluster.py's (its last stderr line says why it failed).
driver_try() {
    local name=$1; shift
    OUT="$PHASE_DIR/$name.json"
    local rc=0
    bounded "$PY" "$DRIVER" "$@" >"$OUT" 2>"$PHASE_DIR/$name.stderr" || rc=$?
    if [[ $rc -eq 0 ]] && ! jq -e . "$OUT" >/dev/null 2>&1; then rc=1; fi
    return $rc
}
# driver NAME SUBCOMMAND ARGS...: the same; the phase fails when it does.
driver() {
    local rc=0
    driver_try "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        fail_with_output "$PHASE_DIR/$1.stderr" "$1: cluster.py $2 failed (status $rc): $(tail -1 "$PHASE_DIR/$1.stderr")"
    fi
}
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "–"; else printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# list "A B C": the space-separated MB/s as "A, B, C"; seconds_list A B C: seconds, 2 decimals.
list() { local x out=""; for x in $1; do out+="${out:+, }$(fmt "$x" 0)"; done; echo "$out"; }
seconds_list() { local x out=""; for x in "$@"; do out+="${out:+, }$(fmt "$x" 2)"; done; echo "$out"; }

# ----------------------------------------------------------------------------------------
# The "before" binary: built once per commit from a temporary git worktree, then cached
# ----------------------------------------------------------------------------------------

WORKTREE=""
BUILD_PID=""
cluster_cleanup() {
    local rc=$? i
    # run.sh's timeout may signal the phase twice (itself, then its process group): a second
    # SIGTERM arriving here must not cut the cleanup short.
    trap '' INT TERM
    set +e   # phase_cleanup takes the status from $?, set below by a subshell's exit
    exec 2>&9
    kill_nodes
    if [[ -n "$BUILD_PID" ]] && kill -0 "$BUILD_PID" 2>/dev/null; then
        log "stopping the build of $BEFORE_REV (process group $BUILD_PID)"
        kill -TERM -- "-$BUILD_PID" 2>/dev/null || kill -TERM "$BUILD_PID" 2>/dev/null
        for ((i = 0; i < 100; i++)); do kill -0 "$BUILD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$BUILD_PID" 2>/dev/null
        wait "$BUILD_PID" 2>/dev/null
    fi
    if [[ -n "$WORKTREE" && -d "$WORKTREE" ]]; then
        git -C "$REPO_DIR" worktree remove --force "$WORKTREE" 2>/dev/null || rm -rf "$WORKTREE"
        git -C "$REPO_DIR" worktree prune 2>/dev/null || true
    fi
    (exit "$rc")
    phase_cleanup
}
# shellcheck source=bench/lib/nodes.sh
source "$REPO_DIR/bench/lib/nodes.sh"
trap cluster_cleanup EXIT

if [[ -n "${BENCH_CLUSTER_BEFORE_VLTAVA:-}" ]]; then
    BEFORE_BIN="$(realpath "$BENCH_CLUSTER_BEFORE_VLTAVA")"
    [[ -x "$BEFORE_BIN" ]] || die "BENCH_CLUSTER_BEFORE_VLTAVA=$BENCH_CLUSTER_BEFORE_VLTAVA is not an executable"
    BEFORE_LABEL="$BEFORE_REV (binary: $BEFORE_BIN)"
else
    full_rev="$(git -C "$REPO_DIR" rev-parse --verify --quiet "$BEFORE_REV^{commit}")" \
        || die "BENCH_CLUSTER_BEFORE_REV=$BEFORE_REV is not a commit of $REPO_DIR"
    BEFORE_TARGET="${BENCH_CLUSTER_BEFORE_TARGET:-${TMPDIR:-/tmp}/vltava-bench-before-target}"
    BEFORE_BIN="$BEFORE_TARGET/vltava-$full_rev"
    BEFORE_LABEL="$BEFORE_REV"
    if [[ -x "$BEFORE_BIN" ]]; then
        log "before: cached $BEFORE_BIN"
    else
        WORKTREE="$PHASE_DIR/before-src"
        log "before: git worktree add $WORKTREE $BEFORE_REV; cargo build --release -p vltava-cli (CARGO_TARGET_DIR=$BEFORE_TARGET, nice $NICE, at most ${BUILD_TIMEOUT}s; log: $PHASE_DIR/before-build.log)"
        git -C "$REPO_DIR" worktree add --detach "$WORKTREE" "$full_rev" >"$PHASE_DIR/before-build.log" 2>&1 \
            || fail_with_output "$PHASE_DIR/before-build.log" "git worktree add $BEFORE_REV failed"
        t0="$(now_s)"
        rc=0
        # In the background, waited for: a signal then runs the cleanup at once instead of after
        # the build. timeout runs in a process group of its own (cargo and rustc with it), which
        # the cleanup stops.
        (cd "$WORKTREE" && CARGO_TARGET_DIR="$BEFORE_TARGET" exec timeout --kill-after=30 "$BUILD_TIMEOUT" \
            nice -n "$NICE" cargo build --release --quiet -p vltava-cli) >>"$PHASE_DIR/before-build.log" 2>&1 &
        BUILD_PID=$!
        wait "$BUILD_PID" || rc=$?
        BUILD_PID=""
        [[ $rc -eq 0 ]] || fail_with_output "$PHASE_DIR/before-build.log" "cargo build of $BEFORE_REV failed (status $rc)"
        cp "$BEFORE_TARGET/release/vltava" "$BEFORE_BIN.tmp" && mv "$BEFORE_BIN.tmp" "$BEFORE_BIN"
        git -C "$REPO_DIR" worktree remove --force "$WORKTREE" && WORKTREE=""
        log "before: built in $(elapsed_since "$t0") s, cached as $BEFORE_BIN"
    fi
fi

# ----------------------------------------------------------------------------------------
# The cluster: three combined nodes (bench/lib/nodes.sh)
# ----------------------------------------------------------------------------------------

wait_all_brokers() {
    driver "$1" wait-brokers --watch "$ALL_ADDRS" --expect "$ALL_IDS" --timeout 90
}
stop_cluster() {
    # SIGKILL: a clean stop of the last voters would wait for a quorum that is already gone; the
    # data is thrown away anyway.
    local i
    for ((i = 1; i <= NODES; i++)); do
        if node_alive "$i"; then kill -KILL "${NODE_PID[$i]}" 2>/dev/null || true; fi
    done
    for ((i = 1; i <= NODES; i++)); do
        [[ -n "${NODE_PID[$i]}" ]] && { wait "${NODE_PID[$i]}" 2>/dev/null || true; }
        NODE_PID[$i]=""
    done
}

# rejoin I NAME: restarts node I on its data dir and waits until every node lists all brokers and
# a topic created through node I is visible on every broker. Returns 1 (REJOIN_STATUS: the
# node's exit status) if node I exits meanwhile; the phase fails if anything else goes wrong.
REJOIN_STATUS=0
rejoin() {
    local i=$1 name=$2 ok=1
    launch_node "$i"
    if ! wait_for_port "${NODE_PORT[$i]}" "${NODE_PID[$i]}" 90; then
        if node_alive "$i"; then die "node $i did not listen on $(addr "$i") within 90 s (log: ${NODE_LOG[$i]})"; fi
        ok=0
    fi
    if [[ $ok -eq 1 ]]; then
        driver_try "$name" wait-brokers --watch "$ALL_ADDRS" --expect "$ALL_IDS" --timeout 90 --pid "${NODE_PID[$i]}" || ok=0
    fi
    if [[ $ok -eq 1 ]]; then
        driver_try "$name-probe" create --via "$(addr "$i")" --topic "probe-$name" || ok=0
    fi
    if [[ $ok -eq 1 ]]; then
        driver "$name-probe-wait" wait-topic --watch "$ALL_ADDRS" --topic "probe-$name"
    fi
    if node_alive "$i"; then
        [[ $ok -eq 1 ]] || fail_with_output "$OUT" "$name: node $i runs but $(tail -1 "${OUT%.json}.stderr")"
        return 0
    fi
    wait "${NODE_PID[$i]}" 2>/dev/null && REJOIN_STATUS=0 || REJOIN_STATUS=$?
    NODE_PID[$i]=""
    return 1
}

# ----------------------------------------------------------------------------------------
# C1 baseline: CreateTopics of BIG_PARTITIONS on a lone node
# ----------------------------------------------------------------------------------------

start_broker single --set auto.create.topics.enable=false
C1_SINGLE_R=(); C1_SINGLE_V=()
for ((k = 1; k <= C1_REPS; k++)); do
    measure_begin
    driver "c1-single-$k" create-wait --via "$BOOTSTRAP" --watch "$BOOTSTRAP" --topic "big-$k" --partitions "$BIG_PARTITIONS"
    measure_end "cluster C1: CreateTopics of $BIG_PARTITIONS partitions on a lone node, $k of $C1_REPS" 0 - -
    C1_SINGLE_R+=("$(jget .response_s)"); C1_SINGLE_V+=("$(jget .all_visible_s)")
    log "C1 lone node, $k of $C1_REPS: response after $(fmt "${C1_SINGLE_R[-1]}" 3) s, all partitions led after $(fmt "${C1_SINGLE_V[-1]}" 3) s"
done
C1_SINGLE_RESP="$(median "${C1_SINGLE_R[@]}")"; C1_SINGLE_ALL="$(median "${C1_SINGLE_V[@]}")"
kv cluster.c1.single.response_s "$C1_SINGLE_RESP"
kv cluster.c1.single.visible_s "$C1_SINGLE_ALL"
stop_broker
[[ "$KEEP_DATA" == 1 ]] || rm -rf "$BROKER_DATA"

# ----------------------------------------------------------------------------------------
# The cluster
# ----------------------------------------------------------------------------------------

log "cluster: starting $NODES nodes (voters $VOTERS)"
t0="$(now_s)"
for ((i = 1; i <= NODES; i++)); do launch_node "$i"; done
for ((i = 1; i <= NODES; i++)); do wait_node "$i"; done
wait_all_brokers cluster-start
START_S="$(elapsed_since "$t0")"
read -r CTL0 TERM0 <<<"$(active_controller)"
log "cluster: all $NODES brokers listed by every node after $START_S s; active controller: node ${CTL0:-?} (term ${TERM0:-?})"
kv cluster.start_s "$START_S"

# --- C1: CreateTopics of BIG_PARTITIONS through node 1 ---
C1_R=(); C1_V=(); C1_PER=()
for ((k = 1; k <= C1_REPS; k++)); do
    driver "c1-cluster-$k" create-wait --via "$(addr 1)" --watch "$ALL_ADDRS" --topic "big-$k" --partitions "$BIG_PARTITIONS"
    check_nodes "C1"
    C1_R+=("$(jget .response_s)"); C1_V+=("$(jget .all_visible_s)")
    C1_PER+=("$(jq -r --arg a "$ALL_ADDRS" '.visible_s as $v | ($a | split(",")) | to_entries
        | map("node \(.key + 1) \($v[.value] * 1000 | round) ms") | join(", ")' "$OUT")")
    log "C1 cluster, $k of $C1_REPS: response after $(fmt "${C1_R[-1]}" 3) s, all partitions led on every broker after $(fmt "${C1_V[-1]}" 3) s (${C1_PER[-1]})"
done
C1_RESP="$(median "${C1_R[@]}")"; C1_ALL="$(median "${C1_V[@]}")"
kv cluster.c1.response_s "$C1_RESP"
kv cluster.c1.visible_s "$C1_ALL"
C1_CTL="$(active_controller | cut -d' ' -f1)"

# --- C2: propagation lag of LAG_TOPICS topics created one by one through node 1 ---
driver c2-lag lag --via "$(addr 1)" --watch "$ALL_ADDRS" --count "$LAG_TOPICS" --prefix lag
check_nodes "C2"
C2_P50="$(jget .lag_max_over_brokers.p50_ms)"; C2_P99="$(jget .lag_max_over_brokers.p99_ms)"
C2_MAX="$(jget .lag_max_over_brokers.max_ms)"
C2_CREATE_P50="$(jget .create.p50_ms)"; C2_CREATE_P99="$(jget .create.p99_ms)"
C2_PER="$(jq -r --arg a "$ALL_ADDRS" '.per_broker as $v | ($a | split(",")) | to_entries
    | map("node \(.key + 1) p50 \($v[.value].p50_ms * 100 | round / 100) / p99 \($v[.value].p99_ms * 100 | round / 100) ms") | join(", ")' "$OUT")"
C2_CTL="$(active_controller | cut -d' ' -f1)"
log "C2 lag, slowest broker: p50 $(fmt "$C2_P50" 2) ms, p99 $(fmt "$C2_P99" 2) ms, max $(fmt "$C2_MAX" 2) ms ($C2_PER); CreateTopics p50 $(fmt "$C2_CREATE_P50" 2) ms, p99 $(fmt "$C2_CREATE_P99" 2) ms"
kv cluster.c2.lag_p50_ms "$C2_P50"
kv cluster.c2.lag_p99_ms "$C2_P99"
kv cluster.c2.lag_max_ms "$C2_MAX"
kv cluster.c2.create_p50_ms "$C2_CREATE_P50"
kv cluster.c2.create_p99_ms "$C2_CREATE_P99"

# --- C3: controller failover, FAILOVERS times ---
C3=(); C3_DETAIL=(); C3_REFUSED=()
for ((r = 1; r <= FAILOVERS; r++)); do
    read -r victim term <<<"$(active_controller)"
    [[ -n "$victim" && -n "${NODE_PID[$victim]:-}" ]] || die "C3 run $r: no active controller in the nodes' logs"
    node_alive "$victim" || die "C3 run $r: the active controller, node $victim, is not running"
    survivor=""
    for ((i = 1; i <= NODES; i++)); do [[ $i -ne $victim ]] && { survivor=$i; break; }; done
    log "C3 run $r: SIGKILL of the active controller, node $victim (term $term); CreateTopics through node $survivor until one is accepted"
    driver "c3-failover-$r" failover --kill-pid "${NODE_PID[$victim]}" --via "$(addr "$survivor")" --prefix "failover-$r"
    wait "${NODE_PID[$victim]}" 2>/dev/null || true
    NODE_PID[$victim]=""
    secs="$(jget .seconds)"; attempts="$(jget .attempts)"
    errs="$(jq -r '.errors | to_entries | map("\(.key) ×\(.value)") | join(", ")' "$OUT")"
    read -r newctl newterm <<<"$(active_controller)"
    # When the new controller announced itself: its log line's UTC timestamp against the kill's.
    active_s="?"
    line="$(cat "$PHASE_DIR"/node*-*.stderr | grep -m1 "this node is the active controller node=$newctl term=$newterm\b" || true)"
    if [[ -n "$line" ]] && ts="$(date -u -d "${line%% *}" +%s.%N 2>/dev/null)"; then
        active_s="$(awk -v a="$ts" -v k="$(jget .kill_unix)" 'BEGIN { printf "%.2f", a - k }')"
    fi
    log "C3 run $r: accepted after $(fmt "$secs" 3) s ($attempts attempts${errs:+; refused: $errs}); active controller now node $newctl (term $newterm), which announced itself ${active_s} s after the kill"
    [[ "$newctl" != "$victim" ]] || log "C3 run $r: WARNING: no other node has announced itself active controller"
    C3+=("$secs")
    C3_DETAIL+=("run $r: node $victim (term $term) killed; node $newctl active controller (term $newterm) after $active_s s; CreateTopics through node $survivor accepted after $(fmt "$secs" 2) s, $attempts attempt(s)${errs:+ (refused before: $errs)}")
    kv "cluster.c3.run$r.s" "$secs"
    # The victim back on its data dir at once. The active controller refuses a new incarnation
    # of a broker whose old session is still alive (broker.session.timeout.ms, counted from the
    # new controller's activation): since 3340206 the node retries its registration until then;
    # before, it exited. If it exits so, it is started again once the survivors have fenced it
    # (it is gone from their Metadata). The next run starts once every node lists all three
    # brokers and a topic created through the returned node is visible everywhere.
    t0="$(now_s)"
    if ! rejoin "$victim" "c3-rejoin-$r"; then
        why="$(grep -m1 '^error:' "${NODE_LOG[$victim]}" || true)"
        if [[ "$why" != *"already registered by a live incarnation"* ]]; then
            tail -20 "${NODE_LOG[$victim]}" >&2
            die "C3 run $r: node $victim exited (status $REJOIN_STATUS) when restarted (log: ${NODE_LOG[$victim]})"
        fi
        log "C3 run $r: node $victim, restarted right after the failover, exited with status $REJOIN_STATUS: '$why'; waiting for the survivors to fence it"
        others=""
        for ((i = 1; i <= NODES; i++)); do
            if [[ $i -ne $victim ]]; then others+="${others:+,}$(addr "$i")"; fi
        done
        driver "c3-fenced-$r" wait-brokers --watch "$others" --expect "$(seq 1 "$NODES" | grep -vx "$victim" | paste -sd,)" --timeout 60
        fenced_s="$(elapsed_since "$t0")"
        C3_REFUSED+=("run $r: exit status $REJOIN_STATUS, node $victim fenced $(fmt "$fenced_s" 1) s after the failover's success")
        rejoin "$victim" "c3-rejoin-$r-again" \
            || { tail -20 "${NODE_LOG[$victim]}" >&2; die "C3 run $r: node $victim exited (status $REJOIN_STATUS) when restarted after its fencing (log: ${NODE_LOG[$victim]})"; }
    fi
    check_nodes "C3 run $r"
    back_s="$(elapsed_since "$t0")"
    C3_DETAIL[-1]+="; node $victim (restarted at once) back and serving $(fmt "$back_s" 1) s after that success"
    log "C3 run $r: node $victim back and serving after $back_s s"
done
C3_MEDIAN="$(median "${C3[@]}")"
kv cluster.c3.median_s "$C3_MEDIAN"
kv cluster.c3.restarts_refused "${#C3_REFUSED[@]}"
stop_cluster
[[ "$KEEP_DATA" == 1 ]] || rm -rf "$PHASE_DIR/cluster"

# ----------------------------------------------------------------------------------------
# C4: single-node produce / consume, before (BEFORE_REV) and after (the binary under test)
# ----------------------------------------------------------------------------------------

check_disk "$PHASE_DIR" $(( TP_COUNT * MSG_SIZE + (512 << 20) )) "C4 ($TP_COUNT records, one run at a time)"
RDK_PRODUCE_OPTS=(-a -1 -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=100000)
declare -A TP_PRODUCE=() TP_CONSUME=()
tp_run() {
    local which=$1 round=$2 bin label
    if [[ $which == before ]]; then bin="$BEFORE_BIN"; label="before ($BEFORE_REV)"; else bin="$AFTER_BIN"; label="after ($AFTER_LABEL)"; fi
    VLTAVA="$bin"
    start_broker "tp-$which-$round"
    create_topic tp --partitions 1
    measure_begin
    rdk_produce "c4-produce-$which-$round" "$TP_COUNT" -t tp -p 0 "${RDK_PRODUCE_OPTS[@]}"
    measure_end "cluster C4: produce, 1 partition, acks=all, rdkafka ×1, $label, round $round" $((TP_COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"
    TP_PRODUCE[$which]+="$RDK_MBPS "
    kv "cluster.c4.$which.round$round.produce_mbps" "$RDK_MBPS"
    for pass in 1 2; do
        measure_begin
        rdk_consume "c4-consume-$which-$round-$pass" "$TP_COUNT" -t tp -p 0 -o beginning
        measure_end "cluster C4: consume, 1 partition from the page cache, read $pass, $label, round $round" $((TP_COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"
    done
    TP_CONSUME[$which]+="$RDK_MBPS "
    kv "cluster.c4.$which.round$round.consume_mbps" "$RDK_MBPS"
    stop_broker
    [[ "$KEEP_DATA" == 1 ]] || rm -rf "$BROKER_DATA"
    VLTAVA="$AFTER_BIN"
}
# Rounds alternate which binary goes first (before, after, after, before, ...), so that a drift
# of the machine's load over the phase weighs on both alike.
for ((r = 1; r <= TP_ROUNDS; r++)); do
    if ((r % 2)); then order=(before after); else order=(after before); fi
    for w in "${order[@]}"; do tp_run "$w" "$r"; done
done
# shellcheck disable=SC2086  # word splitting of the space-separated lists is intended
{
    P_BEFORE="$(median ${TP_PRODUCE[before]})"; P_AFTER="$(median ${TP_PRODUCE[after]})"
    C_BEFORE="$(median ${TP_CONSUME[before]})"; C_AFTER="$(median ${TP_CONSUME[after]})"
}
kv cluster.c4.produce.before_mbps "$P_BEFORE"; kv cluster.c4.produce.after_mbps "$P_AFTER"
kv cluster.c4.consume.before_mbps "$C_BEFORE"; kv cluster.c4.consume.after_mbps "$C_AFTER"

# ----------------------------------------------------------------------------------------
# Report: report.md (printed by run.sh after its tables, and appended with them)
# ----------------------------------------------------------------------------------------

{
    echo "Cluster phase: $NODES combined nodes on 127.0.0.1 (RF 1), bench/lib/cluster.py (raw Metadata v4 / CreateTopics v2); C4: $TP_COUNT × $MSG_SIZE B records, $TP_ROUNDS round(s) per binary, median."
    echo
    echo "| # | cluster figure | figure | baseline (same run) | ratio |"
    echo "|---|---|---:|---|---:|"
    echo "| C1 | CreateTopics of $BIG_PARTITIONS partitions (RF 1) through node 1 of $NODES: request → response, median of $C1_REPS | $(fmt "$C1_RESP" 3) s ($(seconds_list "${C1_R[@]}")) | lone node: $(fmt "$C1_SINGLE_RESP" 3) s ($(seconds_list "${C1_SINGLE_R[@]}")) | $(ratio "$C1_RESP" "$C1_SINGLE_RESP") |"
    echo "| C1 | same: request → all $BIG_PARTITIONS partitions with a leader in every broker's Metadata | $(fmt "$C1_ALL" 3) s ($(seconds_list "${C1_V[@]}")) | lone node: $(fmt "$C1_SINGLE_ALL" 3) s ($(seconds_list "${C1_SINGLE_V[@]}")) | $(ratio "$C1_ALL" "$C1_SINGLE_ALL") |"
    echo "| C2 | metadata propagation lag, CreateTopics response from node 1 → visible on every broker, p50 of $LAG_TOPICS topics | $(fmt "$C2_P50" 2) ms | – | – |"
    echo "| C2 | same, p99 | $(fmt "$C2_P99" 2) ms | – | – |"
    echo "| C3 | controller failover: SIGKILL of the active controller → first CreateTopics accepted through a survivor, median of $FAILOVERS | $(fmt "$C3_MEDIAN" 2) s ($(seconds_list "${C3[@]}")) | – | – |"
    echo "| C4 | single-node produce, 1 partition, acks=all, rdkafka_performance ×1, after ($AFTER_LABEL) | $(fmt "$P_AFTER" 1) MB/s ($(list "${TP_PRODUCE[after]}")) | before ($BEFORE_LABEL): $(fmt "$P_BEFORE" 1) MB/s ($(list "${TP_PRODUCE[before]}")) | $(ratio "$P_AFTER" "$P_BEFORE") |"
    echo "| C4 | single-node consume, 1 partition from the page cache (2nd read), after ($AFTER_LABEL) | $(fmt "$C_AFTER" 1) MB/s ($(list "${TP_CONSUME[after]}")) | before ($BEFORE_LABEL): $(fmt "$C_BEFORE" 1) MB/s ($(list "${TP_CONSUME[before]}")) | $(ratio "$C_AFTER" "$C_BEFORE") |"
    echo
    echo "- cluster: all $NODES brokers listed by every node $(fmt "$START_S" 1) s after launch; active controller node ${CTL0:-?} at the start, node ${C1_CTL:-?} during C1, node ${C2_CTL:-?} during C2 (node 1, which received the requests, forwards them when it is not the controller)"
    echo "- C1 cluster, time from the request until each broker showed every partition led: $(printf '%s; ' "${C1_PER[@]}" | sed 's/; $//')"
    echo "- C2 per broker (from node 1's response): $C2_PER; slowest broker max $(fmt "$C2_MAX" 2) ms; CreateTopics of one partition through node 1 p50 $(fmt "$C2_CREATE_P50" 2) ms, p99 $(fmt "$C2_CREATE_P99" 2) ms"
    for d in "${C3_DETAIL[@]}"; do echo "- C3 $d"; done
    if [[ ${#C3_REFUSED[@]} -gt 0 ]]; then
        echo "- C3: the victim restarted right after the failover was refused by the controller (\"already registered by a live incarnation\", the node exits) and was started again after its fencing: $(printf '%s; ' "${C3_REFUSED[@]}" | sed 's/; $//')"
    fi
} >"$REPORT_FILE"
log "report:"
cat "$REPORT_FILE" >&2
