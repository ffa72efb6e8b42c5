#!/usr/bin/env bash
# Phase "restart" (target 5): BENCH_SCALE_TOPICS × BENCH_SCALE_PARTITIONS partitions (10 × 100)
# filled with BENCH_RESTART_BYTES (10 GiB) by BENCH_RESTART_PRODUCERS `vltava bench produce`
# processes (acks=1, spread over every topic and partition). Then:
#   1. SIGKILL, start again: seconds from launching `vltava serve` until `vltava topic list`
#      answers with every topic (the broker recovers its logs before it listens);
#   2. SIGTERM (clean shutdown, timed too), start again: the same measure.
# The SIGKILL restart comes first so that it recovers the logs exactly as the fill left them.
# After each restart the log end offsets must add up to the records acknowledged.
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

TOPICS="${BENCH_SCALE_TOPICS:-10}"
PARTS="${BENCH_SCALE_PARTITIONS:-100}"
BYTES="${BENCH_RESTART_BYTES:-10737418240}"
PRODUCERS="${BENCH_RESTART_PRODUCERS:-2}"
READY_TIMEOUT="${BENCH_RESTART_READY_TIMEOUT:-300}"
PER=$((BYTES / MSG_SIZE / PRODUCERS))
TOTAL=$((PER * PRODUCERS))
((PER > 0)) || die "BENCH_RESTART_BYTES ($BYTES) is too small"

# The payload plus record/batch overhead (~70 B per 1 KiB record) and the indexes, plus 1 GiB.
check_disk "$PHASE_DIR" $(( TOTAL * (MSG_SIZE + 80) + (1 << 30) )) "restart ($((TOTAL * MSG_SIZE >> 20)) MiB of records)"
start_broker data

topic_list=""
for ((i = 0; i < TOPICS; i++)); do
    create_topic "restart-$i" --partitions "$PARTS"
    topic_list+="${topic_list:+,}restart-$i"
done

# --- fill ---
measure_begin
t0="$(now_s)"
pids=()
for ((p = 0; p < PRODUCERS; p++)); do
    "${BOUNDED[@]}" "$VLTAVA" bench produce --topic "$topic_list" --count "$PER" --acks 1 --linger-ms 5 \
        --batch-size 1000000 --record-size "$MSG_SIZE" --json --bootstrap-server "$BOOTSTRAP" \
        >"$PHASE_DIR/restart-fill-$p.json" 2>"$PHASE_DIR/restart-fill-$p.stderr" &
    pids+=($!)
    track "$!"
done
log "filling $((TOPICS * PARTS)) partitions with $TOTAL records ($((TOTAL * MSG_SIZE >> 20)) MiB) from $PRODUCERS producers"
failed=0
for ((p = 0; p < PRODUCERS; p++)); do
    wait "${pids[$p]}" || { log "fill producer $p exited with status $?"; failed=1; }
done
[[ $failed -eq 0 ]] || fail_with_output "$PHASE_DIR/restart-fill-0.stderr" "a fill producer failed"
fill_s="$(elapsed_since "$t0")"
for ((p = 0; p < PRODUCERS; p++)); do
    OUT="$PHASE_DIR/restart-fill-$p.json"
    [[ "$(jget .records)" == "$PER" && "$(jget .failed)" == 0 ]] \
        || die "fill producer $p: $(jget .records) of $PER acknowledged, $(jget .failed) failed"
done
measure_end "restart: fill $((TOPICS * PARTS)) partitions (acks=1, not a target)" $((TOTAL * MSG_SIZE)) \
    "$(awk -v b=$((TOTAL * MSG_SIZE)) -v s="$fill_s" 'BEGIN { printf "%.2f", b / s / 1e6 }')" \
    "$(awk -v n="$TOTAL" -v s="$fill_s" 'BEGIN { printf "%.0f", n / s }')"
kv restart.bytes "$((TOTAL * MSG_SIZE))"
kv restart.data_kib "$(du -sk "$BROKER_DATA" | cut -f1)"

# Sum of every partition's log end offset (one record per offset: no compaction, no
# transactions), i.e. the records the broker holds.
end_offsets_total() {
    local i sum=0 n
    for ((i = 0; i < TOPICS; i++)); do
        n="$(vltava_cli topic describe "restart-$i" --json 2>>"$PHASE_DIR/admin.txt" \
            | jq '[.partitions[].log_end_offset] | add')" || return 1
        sum=$((sum + n))
    done
    echo "$sum"
}
held="$(end_offsets_total)" || die "cannot describe the restart topics"
[[ "$held" == "$TOTAL" ]] || die "the broker holds $held records, $TOTAL were acknowledged"

# time_to_ready LABEL: launches the broker on the same data directory and port, and polls (every
# 10 ms) until the port listens and `vltava topic list` lists every restart-* topic. Sets READY_SECS.
time_to_ready() {
    local label=$1 t0 n
    t0="$(now_s)"
    launch_broker
    MEASURE_CPU0=0
    while :; do
        broker_alive || die "$label: the broker exited while starting (log: $BROKER_LOG)"
        # The cheap check (is the port open?) first, so that polling takes little CPU from
        # the recovery; then the real one.
        if ss -Htln "sport = :$BROKER_PORT" | grep -q .; then
            n="$(timeout 10 "$VLTAVA" topic list --bootstrap-server "$BOOTSTRAP" --timeout 5 2>/dev/null | grep -c '^restart-' || true)"
            if [[ "$n" == "$TOPICS" ]]; then break; fi
        fi
        if awk -v e="$(elapsed_since "$t0")" -v d="$READY_TIMEOUT" 'BEGIN { exit !(e > d) }'; then
            die "$label: the broker did not answer with its topics within ${READY_TIMEOUT}s"
        fi
        sleep 0.01
    done
    READY_SECS="$(elapsed_since "$t0")"
    log "$label: ready after $READY_SECS s"
}

# --- 1. SIGKILL ---
stop_broker KILL
log "broker killed (SIGKILL)"
time_to_ready "restart after SIGKILL"
# CPU and peak RSS from the start of the process (MEASURE_CPU0=0): the whole recovery.
measure_end "restart after SIGKILL: start until ready (recovery of $((TOTAL * MSG_SIZE >> 20)) MiB)" $((TOTAL * MSG_SIZE)) - -
kv restart.kill_s "$READY_SECS"
held="$(end_offsets_total)" || die "cannot describe the restart topics after SIGKILL"
kv restart.kill_records "$held"
[[ "$held" == "$TOTAL" ]] || log "WARNING: after SIGKILL the broker holds $held records, $TOTAL were acknowledged"

# --- 2. SIGTERM ---
stop_broker TERM
kv restart.shutdown_s "$STOP_SECS"
kv restart.shutdown_status "$STOP_STATUS"
log "clean shutdown (SIGTERM) took $STOP_SECS s, exit status $STOP_STATUS"
time_to_ready "restart after SIGTERM"
measure_end "restart after SIGTERM: start until ready" $((TOTAL * MSG_SIZE)) - -
kv restart.term_s "$READY_SECS"
held="$(end_offsets_total)" || die "cannot describe the restart topics after SIGTERM"
kv restart.term_records "$held"
[[ "$held" == "$TOTAL" ]] || log "WARNING: after SIGTERM the broker holds $held records, $TOTAL were acknowledged"
kv restart.partitions "$((TOPICS * PARTS))"
stop_broker
