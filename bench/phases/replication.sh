#!/usr/bin/env bash
# Phase "replication" (not in the default list: BENCH_PHASES=replication bench/run.sh): partition
# replication on three combined nodes on 127.0.0.1, each figure beside a baseline from the same
# run and the same cluster.
#   R1  produce MB/s to a 1-partition topic with RF=3, acks=all, min.insync.replicas=2 against a
#       1-partition topic with RF=1, acks=1 (same leader node), rdkafka_performance as in the
#       produce phase; BENCH_REPL_ROUNDS (3) rounds alternating which goes first, median
#   R2  produce acknowledgement latency p50 / p99 / p99.9 at BENCH_REPL_RATE (20,000) records/s of
#       1 KiB for BENCH_REPL_SECONDS (20), linger.ms=0, `vltava bench produce --rate`, RF=3
#       acks=all beside RF=1 acks=1
#   R3  failover: SIGKILL of the leader of an RF=3 partition while a client produces to it
#       continuously (acks=all), until the first Produce acknowledged by its successor;
#       BENCH_REPL_FAILOVERS (3) times, the victim restarted and back in the ISR in between;
#       beside the configured broker.session.timeout.ms
#   R4  follower catch-up: one follower of an RF=3 partition stopped (SIGTERM),
#       BENCH_REPL_CATCHUP_BYTES (1 GiB) written, the follower started again; time until it is
#       back in the ISR and the MB/s that makes, beside the MB/s of writing those bytes
# The cluster runs with broker.session.timeout.ms=BENCH_REPL_SESSION_TIMEOUT_MS (3000) and
# broker.heartbeat.interval.ms=BENCH_REPL_HEARTBEAT_MS (500), lowered from 9000 / 1000 so that a
# dead broker is fenced within ~3 s (as in tests/e2e/test_replication.py). Requests of R3/R4 and
# the topic creation (explicit replica assignments) are sent by bench/lib/replication.py; the
# figures go to results, and a Markdown table to report.md, which run.sh prints after its tables.
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

# The phase's own stderr, for the cleanup (see cluster.sh).
exec 9>&2
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DRIVER="$REPO_DIR/bench/lib/replication.py"
CDRIVER="$REPO_DIR/bench/lib/cluster.py"
if [[ -n "${BENCH_PYTHON:-}" ]]; then
    PY="$BENCH_PYTHON"
elif [[ -x "$REPO_DIR/.venv/bin/python" ]]; then
    PY="$REPO_DIR/.venv/bin/python"
else
    PY="$(command -v python3)" || die "no python3 for bench/lib/replication.py"
fi

# parse_bytes SIZE: bytes of "1073741824", "256MiB", "1GiB", "512KiB" (also K, M, G: binary).
parse_bytes() {
    local s=$1 n unit
    [[ "$s" =~ ^([0-9]+)([KMG]i?B?)?$ ]] || die "'$s' is not a size (bytes, or a number with KiB, MiB or GiB)"
    n=${BASH_REMATCH[1]}; unit=${BASH_REMATCH[2]:0:1}
    case $unit in
        K) echo $((n << 10)) ;;
        M) echo $((n << 20)) ;;
        G) echo $((n << 30)) ;;
        *) echo "$n" ;;
    esac
}

NODES=3
R1_COUNT="${BENCH_REPL_COUNT:-2000000}"
R1_ROUNDS="${BENCH_REPL_ROUNDS:-3}"
RATE="${BENCH_REPL_RATE:-20000}"
SECS="${BENCH_REPL_SECONDS:-20}"
FAILOVERS="${BENCH_REPL_FAILOVERS:-3}"
WARMUP="${BENCH_REPL_FAILOVER_WARMUP:-2}"
CATCHUP_BYTES="$(parse_bytes "${BENCH_REPL_CATCHUP_BYTES:-1GiB}")"
SESSION_MS="${BENCH_REPL_SESSION_TIMEOUT_MS:-3000}"
HEARTBEAT_MS="${BENCH_REPL_HEARTBEAT_MS:-500}"
MIN_ISR="${BENCH_REPL_MIN_ISR:-2}"
for n in R1_COUNT R1_ROUNDS RATE SECS FAILOVERS WARMUP CATCHUP_BYTES SESSION_MS HEARTBEAT_MS MIN_ISR; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
((MIN_ISR <= 3)) || die "BENCH_REPL_MIN_ISR must be at most 3 (RF 3), got $MIN_ISR"
CATCHUP_COUNT=$((CATCHUP_BYTES / MSG_SIZE))
((CATCHUP_COUNT > 0)) || die "BENCH_REPL_CATCHUP_BYTES ($CATCHUP_BYTES) is smaller than one record ($MSG_SIZE B)"
CATCHUP_BYTES=$((CATCHUP_COUNT * MSG_SIZE))
REPORT_FILE="$PHASE_DIR/report.md"
: >"$REPORT_FILE"
RDK_OPTS=(-X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=100000)

# Every replica of RF 3 is on the same disk: the largest step writes its payload three times.
R1_BYTES=$((R1_COUNT * MSG_SIZE))
NEED=$(( (R1_BYTES > CATCHUP_BYTES ? R1_BYTES : CATCHUP_BYTES) * 3 + (1 << 30) ))
check_disk "$PHASE_DIR" "$NEED" "replication (3 replicas of $(( (R1_BYTES > CATCHUP_BYTES ? R1_BYTES : CATCHUP_BYTES) >> 20 )) MiB, one step at a time)"

fmt() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "–"; else printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maximum() { printf '%s\n' "$@" | sort -g | tail -1; }
list() { local x out=""; for x in "$@"; do out+="${out:+, }$(fmt "$x" "${LIST_DEC:-0}")"; done; echo "$out"; }

# py_try NAME SCRIPT SUBCOMMAND ARGS...: a driver, bounded; OUT is its JSON; its status returned.
py_try() {
    local name=$1 script=$2; shift 2
    OUT="$PHASE_DIR/$name.json"
    local rc=0
    bounded "$PY" "$script" "$@" >"$OUT" 2>"$PHASE_DIR/$name.stderr" || rc=$?
    if [[ $rc -eq 0 ]] && ! jq -e . "$OUT" >/dev/null 2>&1; then rc=1; fi
    return $rc
}
py_run() {
    local rc=0
    py_try "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        fail_with_output "$PHASE_DIR/$1.stderr" "$1: $(basename "$2") $3 failed (status $rc): $(tail -1 "$PHASE_DIR/$1.stderr")"
    fi
}
driver() { local name=$1; shift; py_run "$name" "$DRIVER" "$@"; }
cdriver() { local name=$1; shift; py_run "$name" "$CDRIVER" "$@"; }

# ----------------------------------------------------------------------------------------
# The cluster: three combined nodes (bench/lib/nodes.sh), sessions shortened
# ----------------------------------------------------------------------------------------

# shellcheck source=bench/lib/nodes.sh
source "$REPO_DIR/bench/lib/nodes.sh"
NODE_EXTRA_ARGS=(--set "broker.session.timeout.ms=$SESSION_MS" --set "broker.heartbeat.interval.ms=$HEARTBEAT_MS")
repl_cleanup() {
    local rc=$? i
    trap '' INT TERM
    set +e
    exec 2>&9
    # SIGKILL: a clean stop of the last voters would wait for a quorum already gone; the data
    # is thrown away anyway.
    kill_nodes
    (exit "$rc")
    phase_cleanup
}
trap repl_cleanup EXIT

# stop_node I SIG: signals node I and waits for its exit (SIGKILL after 30 s); STOP_SECS.
stop_node() {
    local i=$1 sig=$2 t0 k
    t0="$(now_s)"
    kill -"$sig" "${NODE_PID[$i]}" 2>/dev/null || true
    for ((k = 0; k < 1500; k++)); do kill -0 "${NODE_PID[$i]}" 2>/dev/null || break; sleep 0.02; done
    if kill -0 "${NODE_PID[$i]}" 2>/dev/null; then
        log "node $i ignored SIG$sig for 30 s; sending SIGKILL"
        kill -KILL "${NODE_PID[$i]}" 2>/dev/null || true
    fi
    STOP_STATUS=0
    wait "${NODE_PID[$i]}" 2>/dev/null || STOP_STATUS=$?
    STOP_SECS="$(elapsed_since "$t0")"
    NODE_PID[$i]=""
}
# roles: CTL (the active controller) and A, B (the two other nodes, A < B), from the logs now.
roles() {
    local i
    read -r CTL _ <<<"$(active_controller)"
    [[ -n "$CTL" ]] || die "no active controller in the nodes' logs"
    A=""; B=""
    for ((i = 1; i <= NODES; i++)); do
        [[ $i -eq $CTL ]] && continue
        if [[ -z "$A" ]]; then A=$i; else B=$i; fi
    done
}
wait_all_brokers() { cdriver "$1" wait-brokers --watch "$ALL_ADDRS" --expect "$ALL_IDS" --timeout 90; }
delete_topic_c() {
    bounded "$VLTAVA" topic delete "$1" --bootstrap-server "$ALL_ADDRS" >>"$PHASE_DIR/admin.txt" 2>&1 \
        || log "could not delete topic $1"
}

# Measurement rows for the cluster: CPU of all running nodes summed (a node started during the
# step counts from its start), peak RSS of the largest node (VmHWM reset at the start).
declare -A M_CPU0=() M_PID0=()
node_ticks() { local stat; stat="$(cat "/proc/${NODE_PID[$1]}/stat")"; stat="${stat##*) }"; awk '{ print $12 + $13 }' <<<"$stat"; }
cl_measure_begin() {
    local i
    M_CPU0=(); M_PID0=()
    for ((i = 1; i <= NODES; i++)); do
        node_alive "$i" || continue
        echo 5 >"/proc/${NODE_PID[$i]}/clear_refs" 2>/dev/null || true
        M_CPU0[$i]="$(node_ticks "$i")"; M_PID0[$i]="${NODE_PID[$i]}"
    done
}
cl_measure_end() {
    local label=$1 payload=$2 mbps=$3 recs=$4 i ticks=0 t hwm=0 h cpu_s
    for ((i = 1; i <= NODES; i++)); do
        node_alive "$i" || continue
        t="$(node_ticks "$i")"
        if [[ "${M_PID0[$i]:-}" == "${NODE_PID[$i]}" ]]; then t=$((t - M_CPU0[$i])); fi
        ticks=$((ticks + t))
        h="$(awk '$1 == "VmHWM:" { print $2 }' "/proc/${NODE_PID[$i]}/status")"
        ((h > hwm)) && hwm=$h
    done
    cpu_s="$(awk -v a="$ticks" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", a / t }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$mbps" "$recs" "$payload" "$cpu_s" "$hwm" >>"$MEASURE_FILE"
    log "$label: $mbps MB/s, $recs records/s, nodes' CPU ${cpu_s}s, largest peak RSS $((hwm / 1024)) MiB"
}

# rdk_produce_c NAME COUNT BOOTSTRAP ARGS...: rdkafka_performance -P against the cluster.
rdk_produce_c() {
    local name=$1 count=$2 bootstrap=$3; shift 3
    OUT="$PHASE_DIR/$name.txt"
    log "$name: rdkafka_performance -P -c $count -b $bootstrap $*"
    local rc=0
    bounded "$RDKPERF" -P -c "$count" -s "$MSG_SIZE" -b "$bootstrap" "$@" >"$OUT" 2>&1 || rc=$?
    [[ $rc -eq 0 ]] || fail_with_output "$OUT" "$name: rdkafka_performance exited with status $rc$( ((rc == 124 || rc == 137)) && echo " (timed out after ${CMD_TIMEOUT}s)")"
    parse_rdk_produce "$OUT" "$count"
}
# vbench_c NAME ARGS...: `vltava bench ARGS --json` against the cluster; OUT holds the JSON.
vbench_c() {
    local name=$1; shift
    OUT="$PHASE_DIR/$name.json"
    log "$name: vltava bench $*"
    local rc=0
    bounded "$VLTAVA" bench "$@" --json --bootstrap-server "$ALL_ADDRS" >"$OUT" 2>"$PHASE_DIR/$name.stderr" || rc=$?
    [[ $rc -eq 0 ]] || fail_with_output "$PHASE_DIR/$name.stderr" "$name: vltava bench exited with status $rc"
    jq -e . "$OUT" >/dev/null 2>&1 || fail_with_output "$OUT" "$name: no JSON result"
}

log "cluster: starting $NODES nodes (voters $VOTERS; broker.session.timeout.ms=$SESSION_MS, broker.heartbeat.interval.ms=$HEARTBEAT_MS)"
t0="$(now_s)"
for ((i = 1; i <= NODES; i++)); do launch_node "$i"; done
for ((i = 1; i <= NODES; i++)); do wait_node "$i"; done
wait_all_brokers cluster-start
START_S="$(elapsed_since "$t0")"
roles
CTL0=$CTL
log "cluster: all $NODES brokers listed by every node after $START_S s; active controller: node $CTL"
kv replication.start_s "$START_S"

# Leaders of R1, R2 and R4 on node A (not the active controller), the followers on B and the
# controller: both topics of a comparison share their leader.
roles
LEAD=$A
RF3_ASSIGN="$A,$B,$CTL"
# create_rf TOPIC RF: an RF 1 topic on node LEAD or an RF 3 topic led by LEAD.
create_rf() {
    local topic=$1 rf=$2
    if [[ $rf == 3 ]]; then
        driver "create-$topic" create --via "$(addr "$LEAD")" --watch "$ALL_ADDRS" --topic "$topic" \
            --assign "$RF3_ASSIGN" --config "min.insync.replicas=$MIN_ISR"
    else
        driver "create-$topic" create --via "$(addr "$LEAD")" --watch "$ALL_ADDRS" --topic "$topic" --assign "$LEAD"
    fi
}

# ----------------------------------------------------------------------------------------
# R1: produce MB/s, RF 3 acks=all against RF 1 acks=1, alternated
# ----------------------------------------------------------------------------------------

declare -A R1=() R1_ROUND=()
r1_run() {
    local which=$1 r=$2 topic="r1-$1-$2" acks label
    if [[ $which == rf3 ]]; then
        create_rf "$topic" 3; acks=-1; label="RF=3 acks=all min.insync.replicas=$MIN_ISR"
    else
        create_rf "$topic" 1; acks=1; label="RF=1 acks=1"
    fi
    cl_measure_begin
    rdk_produce_c "r1-$which-$r" "$R1_COUNT" "$ALL_ADDRS" -t "$topic" -p 0 -a "$acks" "${RDK_OPTS[@]}"
    cl_measure_end "replication R1: produce, 1 partition, $label, rdkafka ×1, round $r (CPU: 3 nodes)" "$R1_BYTES" "$RDK_MBPS" "$RDK_MSGS"
    check_nodes "R1 $which round $r"
    R1[$which]+="$RDK_MBPS "
    R1_ROUND[$which.$r]="$RDK_MBPS"
    kv "replication.r1.$which.round$r.mbps" "$RDK_MBPS"
    delete_topic_c "$topic"
}
for ((r = 1; r <= R1_ROUNDS; r++)); do
    if ((r % 2)); then order=(rf1 rf3); else order=(rf3 rf1); fi
    for w in "${order[@]}"; do r1_run "$w" "$r"; done
done
# shellcheck disable=SC2086  # word splitting of the space-separated lists is intended
{
    R1_RF1="$(median ${R1[rf1]})"; R1_RF3="$(median ${R1[rf3]})"
    R1_RF1_LIST="$(list ${R1[rf1]})"; R1_RF3_LIST="$(list ${R1[rf3]})"
}
R1_RATIOS=()
for ((r = 1; r <= R1_ROUNDS; r++)); do R1_RATIOS+=("$(ratio "${R1_ROUND[rf3.$r]}" "${R1_ROUND[rf1.$r]}")"); done
kv replication.r1.rf1_mbps "$R1_RF1"
kv replication.r1.rf3_mbps "$R1_RF3"

# ----------------------------------------------------------------------------------------
# R2: latency at a fixed rate, RF 1 acks=1 then RF 3 acks=all
# ----------------------------------------------------------------------------------------

declare -A R2_P50=() R2_P99=() R2_P999=() R2_MAX=() R2_RATE=()
for which in rf1 rf3; do
    topic="r2-$which"
    if [[ $which == rf3 ]]; then create_rf "$topic" 3; acks=all; label="RF=3 acks=all"; else create_rf "$topic" 1; acks=1; label="RF=1 acks=1"; fi
    cl_measure_begin
    vbench_c "r2-$which" produce --topic "$topic" --record-size "$MSG_SIZE" --acks "$acks" --linger-ms 0 \
        --rate "$RATE" --duration "$SECS"
    [[ "$(jget .failed)" == 0 ]] || die "r2-$which: $(jget .failed) records failed"
    cl_measure_end "replication R2: produce at $RATE records/s, linger.ms=0, $label (CPU: 3 nodes)" "$(jget .bytes)" "$(jget .mb_per_sec)" "$(jget .records_per_sec)"
    check_nodes "R2 $which"
    R2_P50[$which]="$(jget .latency_ms.p50)"; R2_P99[$which]="$(jget .latency_ms.p99)"
    R2_P999[$which]="$(jget .latency_ms.p99_9)"; R2_MAX[$which]="$(jget .latency_ms.max)"
    R2_RATE[$which]="$(jget .records_per_sec)"
    for q in p50 p99 p99_9 max; do kv "replication.r2.$which.$q" "$(jget ".latency_ms.$q")"; done
    kv "replication.r2.$which.rate" "${R2_RATE[$which]}"
    delete_topic_c "$topic"
done
# rate_cell WHICH: "" or a warning when the achieved rate is below 95 % of the target.
rate_cell() {
    if awk -v a="${R2_RATE[$1]}" -v t="$RATE" 'BEGIN { exit !(a < 0.95 * t) }'; then
        echo " **RATE NOT SUSTAINED: $(fmt "${R2_RATE[$1]}" 0) records/s**"
    fi
}

# ----------------------------------------------------------------------------------------
# R3: failover of a partition leader, FAILOVERS times
# ----------------------------------------------------------------------------------------

R3=(); R3_DETAIL=()
for ((r = 1; r <= FAILOVERS; r++)); do
    roles
    # The victim: a node that is not the active controller (killing the controller would time
    # the controller's failover as well; cluster C3 has that), alternating between the two.
    if ((r % 2)); then victim=$A; f1=$B; else victim=$B; f1=$A; fi
    topic="r3-failover-$r"
    driver "create-$topic" create --via "$(addr "$f1")" --watch "$ALL_ADDRS" --topic "$topic" \
        --assign "$victim,$f1,$CTL" --config "min.insync.replicas=$MIN_ISR"
    log "R3 run $r: producing to $topic-0 (leader node $victim, followers $f1 and $CTL, the active controller); SIGKILL of node $victim after ${WARMUP}s"
    driver "r3-failover-$r" failover --watch "$(addrs "$f1" "$CTL")" --topic "$topic" --victim-id "$victim" \
        --kill-pid "${NODE_PID[$victim]}" --warmup "$WARMUP" --value-size "$MSG_SIZE"
    wait "${NODE_PID[$victim]}" 2>/dev/null || true
    NODE_PID[$victim]=""
    secs="$(jget .seconds)"; successor="$(jget .successor)"; seen_s="$(jget .new_leader_seen_s)"
    last_req="$(jget .last_request_s)"; attempts="$(jget .attempts)"
    errs="$(jq -r '.errors | to_entries | map("\(.key) ×\(.value)") | join(", ")' "$OUT")"
    before="$(jq -r '.before | "\(.requests) acknowledged requests in the \('"$WARMUP"') s before (p50 \(.p50_ms * 100 | round / 100) ms, max \(.max_ms | round) ms, \(.over_100ms) over 100 ms), the last \(.last_ack_before_kill_s * 1000 | round) ms before the kill"' "$OUT")"
    log "R3 run $r: acknowledged by node $successor $(fmt "$secs" 3) s after the kill (the survivors named it leader after $(fmt "$seen_s" 3) s; meanwhile: $errs)"
    R3+=("$secs")
    kv "replication.r3.run$r.s" "$secs"
    # Back in: restart the victim on its data dir, until it is in the ISR of the partition again
    # and every node lists all brokers.
    t_launch="$(now_s)"
    launch_node "$victim"
    wait_node "$victim"
    driver "r3-rejoin-$r" wait-isr --watch "$ALL_ADDRS" --topic "$topic" --broker "$victim" --state in --since "$t_launch" --timeout 120
    rejoin_s="$(jget .seconds_all)"
    wait_all_brokers "r3-brokers-$r"
    check_nodes "R3 run $r"
    R3_DETAIL+=("run $r: node $victim (leader of $topic-0) killed; node $successor acknowledged after $(fmt "$secs" 2) s; the survivors' Metadata named it leader after $(fmt "$seen_s" 2) s, its first acknowledged Produce ($attempts attempt(s) there) took $(fmt "$last_req" 3) s; $before; after the kill: ${errs:-no error}; node $victim restarted, back in the ISR on every node $(fmt "$rejoin_s" 1) s after its launch")
    delete_topic_c "$topic"
done
R3_MEDIAN="$(median "${R3[@]}")"; R3_MAX="$(maximum "${R3[@]}")"
kv replication.r3.median_s "$R3_MEDIAN"
kv replication.r3.max_s "$R3_MAX"
kv replication.r3.session_timeout_ms "$SESSION_MS"

# ----------------------------------------------------------------------------------------
# R4: follower catch-up
# ----------------------------------------------------------------------------------------

roles
# Leader A, the stopped follower B, the other follower the active controller.
R4_LEADER=$A; R4_FOLLOWER=$B
topic=r4-catchup
driver "create-$topic" create --via "$(addr "$R4_LEADER")" --watch "$ALL_ADDRS" --topic "$topic" \
    --assign "$R4_LEADER,$R4_FOLLOWER,$CTL" --config "min.insync.replicas=$MIN_ISR"
log "R4: SIGTERM of node $R4_FOLLOWER (follower of $topic-0, leader node $R4_LEADER)"
t_stop="$(now_s)"
stop_node "$R4_FOLLOWER" TERM
R4_STOP_S="$STOP_SECS"; R4_STOP_STATUS="$STOP_STATUS"
driver r4-out wait-isr --watch "$(addrs "$R4_LEADER" "$CTL")" --topic "$topic" --broker "$R4_FOLLOWER" --state out --since "$t_stop" --timeout 120
R4_OUT_S="$(jget .seconds_all)"
log "R4: node $R4_FOLLOWER exited after $R4_STOP_S s (status $R4_STOP_STATUS), out of the ISR on the survivors after $(fmt "$R4_OUT_S" 2) s; writing $CATCHUP_COUNT records ($((CATCHUP_BYTES >> 20)) MiB)"
cl_measure_begin
rdk_produce_c r4-fill "$CATCHUP_COUNT" "$(addrs "$R4_LEADER" "$CTL")" -t "$topic" -p 0 -a -1 "${RDK_OPTS[@]}"
cl_measure_end "replication R4: produce $((CATCHUP_BYTES >> 20)) MiB, RF=3 with one follower down (ISR of 2), acks=all, rdkafka ×1 (CPU: 2 nodes)" "$CATCHUP_BYTES" "$RDK_MBPS" "$RDK_MSGS"
R4_FILL_MBPS="$RDK_MBPS"
kv replication.r4.fill_mbps "$R4_FILL_MBPS"
cl_measure_begin
t_launch="$(now_s)"
launch_node "$R4_FOLLOWER"
wait_node "$R4_FOLLOWER"
R4_LISTEN_S="$(elapsed_since "$t_launch")"
driver r4-in wait-isr --watch "$ALL_ADDRS" --topic "$topic" --broker "$R4_FOLLOWER" --state in --since "$t_launch" --timeout "$((CMD_TIMEOUT - 5))"
R4_IN_S="$(jget .seconds_first)"; R4_IN_ALL_S="$(jget .seconds_all)"
R4_PER="$(jq -r --arg a "$ALL_ADDRS" '.seconds as $v | ($a | split(",")) | to_entries
    | map("node \(.key + 1) \($v[.value] * 100 | round / 100) s") | join(", ")' "$OUT")"
R4_MBPS="$(awk -v b="$CATCHUP_BYTES" -v s="$R4_IN_S" 'BEGIN { printf "%.2f", b / 1e6 / s }')"
cl_measure_end "replication R4: follower catch-up of $((CATCHUP_BYTES >> 20)) MiB, launch → back in the ISR (CPU: 3 nodes)" "$CATCHUP_BYTES" "$R4_MBPS" -
check_nodes "R4"
log "R4: node $R4_FOLLOWER listening $(fmt "$R4_LISTEN_S" 2) s after its launch, back in the ISR after $(fmt "$R4_IN_S" 2) s ($R4_PER): $(fmt "$R4_MBPS" 1) MB/s; the fill ran at $(fmt "$R4_FILL_MBPS" 1) MB/s"
R4_FOLLOWER_KIB="$(du -sk "${NODE_DATA[$R4_FOLLOWER]}/$topic-0" 2>/dev/null | cut -f1 || echo "?")"
R4_LEADER_KIB="$(du -sk "${NODE_DATA[$R4_LEADER]}/$topic-0" 2>/dev/null | cut -f1 || echo "?")"
kv replication.r4.seconds "$R4_IN_S"
kv replication.r4.mbps "$R4_MBPS"
kv replication.r4.bytes "$CATCHUP_BYTES"
delete_topic_c "$topic"

# Anything the nodes logged at WARN or ERROR, or a panic, over the whole phase: Vltava's own
# lines per log file (the first quoted); openraft's (an unreachable voter while a node is down,
# a restarted voter's "Can not initialize", vote changes at elections) summed by message, the
# numbers masked.
LOG_NOTES=()
for f in "$PHASE_DIR"/node*-*.stderr; do
    e="$(grep -E ' ERROR ' "$f" | grep -vc ' ERROR openraft' || true)"; p="$(grep -c 'panicked' "$f" || true)"
    w="$(grep -E ' WARN ' "$f" | grep -vc ' WARN openraft' || true)"
    if ((w + e + p > 0)); then
        LOG_NOTES+=("$(basename "$f" .stderr): $e ERROR, $w WARN, $p panic; first: \`$(grep -E ' (ERROR|WARN) |panicked' "$f" | grep -v -m1 -E ' (ERROR|WARN) openraft' | cut -c1-240 | tr '|`' '/ ')\`")
    fi
done
RAFT_NOTES="$(cat "$PHASE_DIR"/node*-*.stderr | grep -E ' (ERROR|WARN) openraft' \
    | sed -E 's/^[^ ]+ +(ERROR|WARN) /\1 /; s/[0-9]+/#/g' | cut -c1-110 | sort | uniq -c | sort -rn \
    | awk '{ n = $1; $1 = ""; sub(/^ /, ""); printf "%s%s ×%d", (NR > 1 ? "; " : ""), $0, n }' | tr '|`' '/ ')"

# ----------------------------------------------------------------------------------------
# Report: report.md (printed by run.sh after its tables, and appended with them)
# ----------------------------------------------------------------------------------------

RDK_DESC="rdkafka_performance -P -p 0 -s $MSG_SIZE ${RDK_OPTS[*]}"
{
    echo "Replication phase: $NODES combined nodes on 127.0.0.1, broker.session.timeout.ms=$SESSION_MS and broker.heartbeat.interval.ms=$HEARTBEAT_MS (lowered by the phase from 9000 / 1000), min.insync.replicas=$MIN_ISR on the RF=3 topics; $MSG_SIZE B records; leaders of R1, R2 and R4 on node $LEAD (not the active controller, node $CTL0), explicit replica assignments."
    echo
    echo "| # | replication figure | figure | baseline (same run, same cluster) | ratio |"
    echo "|---|---|---:|---|---:|"
    echo "| R1 | produce, 1 partition, RF=3, acks=all, $RDK_DESC, $R1_COUNT records, median of $R1_ROUNDS | $(fmt "$R1_RF3" 1) MB/s ($R1_RF3_LIST) | RF=1, acks=1, same command: $(fmt "$R1_RF1" 1) MB/s ($R1_RF1_LIST) | $(ratio "$R1_RF3" "$R1_RF1") |"
    for q in p50 p99 p99.9; do
        case $q in p50) k=R2_P50 ;; p99) k=R2_P99 ;; *) k=R2_P999 ;; esac
        declare -n lat=$k
        echo "| R2 | produce acknowledgement $q at $RATE × $MSG_SIZE B/s for $SECS s, linger.ms=0, RF=3 acks=all (vltava bench produce --rate) | $(fmt "${lat[rf3]}" 2) ms$([[ $q == p50 ]] && rate_cell rf3) | RF=1 acks=1: $(fmt "${lat[rf1]}" 2) ms$([[ $q == p50 ]] && rate_cell rf1) | $(ratio "${lat[rf3]}" "${lat[rf1]}") |"
        unset -n lat
    done
    LIST_DEC=2
    echo "| R3 | failover: SIGKILL of the leader of an RF=3 partition → first acks=all Produce acknowledged by its successor (client producing continuously), median of $FAILOVERS (max) | $(fmt "$R3_MEDIAN" 2) s (max $(fmt "$R3_MAX" 2); $(list "${R3[@]}")) | broker.session.timeout.ms: $(fmt "$((SESSION_MS))" 0) ms (heartbeat $HEARTBEAT_MS ms) | $(ratio "$R3_MEDIAN" "$(awk -v m="$SESSION_MS" 'BEGIN { print m / 1000 }')") |"
    echo "| R4 | follower catch-up: $((CATCHUP_BYTES >> 20)) MiB written while a follower was stopped (SIGTERM); its launch → back in the ISR (first node's Metadata) | $(fmt "$R4_IN_S" 2) s, $(fmt "$R4_MBPS" 1) MB/s | writing those bytes (acks=all, ISR of 2, rdkafka ×1): $(fmt "$R4_FILL_MBPS" 1) MB/s | $(ratio "$R4_MBPS" "$R4_FILL_MBPS") |"
    echo
    echo "- R1 rounds alternate which topic goes first (RF=1, RF=3, then RF=3, RF=1, ...); each topic is created fresh (RF=3 replicas $RF3_ASSIGN, first = leader) and deleted after its run; ratio RF=3 / RF=1 within each round: $(printf '%s, ' "${R1_RATIOS[@]}" | sed 's/, $//') (median $(median "${R1_RATIOS[@]}")). The measurements rows give all three nodes' CPU per GB of payload (not per replica byte) and the largest node's peak RSS"
    echo "- R2 max: RF=3 $(fmt "${R2_MAX[rf3]}" 2) ms, RF=1 $(fmt "${R2_MAX[rf1]}" 2) ms; achieved rates $(fmt "${R2_RATE[rf3]}" 0) and $(fmt "${R2_RATE[rf1]}" 0) records/s"
    for d in "${R3_DETAIL[@]}"; do echo "- R3 $d"; done
    echo "- R4: leader node $R4_LEADER, stopped follower node $R4_FOLLOWER (exited $(fmt "$R4_STOP_S" 2) s after SIGTERM, status $R4_STOP_STATUS; out of the ISR on the survivors $(fmt "$R4_OUT_S" 2) s after the signal); after its launch: listening after $(fmt "$R4_LISTEN_S" 2) s, in the ISR per node: $R4_PER; partition on disk afterwards: leader $R4_LEADER_KIB KiB, follower $R4_FOLLOWER_KIB KiB. The baseline is the produce rate of those same bytes in this run, not a disk rate; the follower reads what the leader has in its page cache"
    if [[ ${#LOG_NOTES[@]} -gt 0 ]]; then
        echo "- node logs, Vltava's WARN/ERROR lines and panics: $(printf '%s; ' "${LOG_NOTES[@]}" | sed 's/; $//')"
    else
        echo "- node logs: no WARN or ERROR line of Vltava's own, no panic"
    fi
    [[ -z "$RAFT_NOTES" ]] || echo "- node logs, openraft's WARN/ERROR lines (all nodes, numbers masked): $RAFT_NOTES"
} >"$REPORT_FILE"
log "report:"
cat "$REPORT_FILE" >&2
