#!/usr/bin/env bash
# Phase "produce" (target 1): one partition, acks=all, rdkafka_performance with linger.ms=5 and
# 1 MB batches; first one producer process, then BENCH_PRODUCE_PROCS processes at once on the
# same partition (in case one generator is the bottleneck). Ratio to iperf3: computed by run.sh.
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

COUNT="${BENCH_COUNT:?}"
PROCS="${BENCH_PRODUCE_PROCS:-2}"
RDK_PRODUCE_OPTS=(-a -1 -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=100000)

check_disk "$PHASE_DIR" $(( COUNT * MSG_SIZE + (512 << 20) )) "produce ($COUNT records, one run at a time)"
start_broker data

# --- one producer ---
create_topic produce-1 --partitions 1
measure_begin
rdk_produce produce-single "$COUNT" -t produce-1 -p 0 "${RDK_PRODUCE_OPTS[@]}"
measure_end "produce, 1 partition, acks=all, rdkafka ×1" $((COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"
kv produce.mbps "$RDK_MBPS"
kv produce.records_per_sec "$RDK_MSGS"
delete_topic produce-1

# --- PROCS producers, same partition ---
PER=$((COUNT / PROCS))
create_topic produce-n --partitions 1
measure_begin
pids=()
for ((i = 0; i < PROCS; i++)); do
    log "produce-par-$i: rdkafka_performance -P -c $PER -t produce-n -p 0 ${RDK_PRODUCE_OPTS[*]}"
    "${BOUNDED[@]}" "$RDKPERF" -P -c "$PER" -s "$MSG_SIZE" -b "$BOOTSTRAP" -t produce-n -p 0 "${RDK_PRODUCE_OPTS[@]}" \
        >"$PHASE_DIR/produce-par-$i.txt" 2>&1 &
    pids+=($!)
    track "$!"
done
failed=0
for ((i = 0; i < PROCS; i++)); do
    wait "${pids[$i]}" || { log "produce-par-$i exited with status $?"; failed=1; }
done
[[ $failed -eq 0 ]] || fail_with_output "$PHASE_DIR/produce-par-0.txt" "a parallel producer failed"
# Aggregate: all bytes over the longest producer's time (they start together; the slowest
# one ends the run), so a producer that finished early does not inflate the figure.
total_bytes=0; max_ms=0; total_recs=0
for ((i = 0; i < PROCS; i++)); do
    parse_rdk_produce "$PHASE_DIR/produce-par-$i.txt" "$PER"
    total_recs=$((total_recs + RDK_DELIVERED))
    total_bytes=$((total_bytes + RDK_DELIVERED * MSG_SIZE))
    if ((RDK_MS > max_ms)); then max_ms=$RDK_MS; fi
done
mbps="$(awk -v b="$total_bytes" -v ms="$max_ms" 'BEGIN { printf "%.2f", b / (ms > 0 ? ms : 1) / 1000 }')"
recs="$(awk -v n="$total_recs" -v ms="$max_ms" 'BEGIN { printf "%.0f", n * 1000 / (ms > 0 ? ms : 1) }')"
measure_end "produce, 1 partition, acks=all, rdkafka ×$PROCS" "$total_bytes" "$mbps" "$recs"
kv produce.par.mbps "$mbps"
kv produce.par.procs "$PROCS"
delete_topic produce-n
stop_broker
