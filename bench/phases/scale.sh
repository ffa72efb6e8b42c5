#!/usr/bin/env bash
# Phase "scale" (target 4): BENCH_SCALE_TOPICS × BENCH_SCALE_PARTITIONS partitions (10 × 100),
# BENCH_SCALE_PRODUCERS producer and BENCH_SCALE_CONSUMERS consumer processes at once.
#   producers: `vltava bench produce --topic scale-0,...,scale-9` (acks=all, linger.ms=5): each
#              process spreads its records over all topics in turn, and the client's sticky
#              partitioner over each topic's partitions (rdkafka_performance -P writes one topic
#              per process, which cannot spread 8 processes over 10 topics).
#   consumers: rdkafka_performance -G (one consumer group subscribed to every topic, range
#              assignor: about 125 partitions per member), started first and tailing.
# Baseline: one `vltava bench produce` to a 1-partition topic with the same settings, on the same
# broker, just before (same client on both sides, so the ratio isolates the partition count).
# Also: broker RSS idle right after start with no topics, and its peak RSS under the load.
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

TOPICS="${BENCH_SCALE_TOPICS:-10}"
PARTS="${BENCH_SCALE_PARTITIONS:-100}"
PRODUCERS="${BENCH_SCALE_PRODUCERS:-8}"
CONSUMERS="${BENCH_SCALE_CONSUMERS:-8}"
COUNT="${BENCH_SCALE_COUNT:-${BENCH_COUNT:?}}"
BASE_COUNT="${BENCH_SCALE_BASE_COUNT:-$COUNT}"
IDLE_WAIT="${BENCH_IDLE_WAIT:-2}"
DRAIN="${BENCH_SCALE_DRAIN_SECS:-60}"
PER=$((COUNT / PRODUCERS))
TOTAL=$((PER * PRODUCERS))
((PER > 0)) || die "BENCH_SCALE_COUNT ($COUNT) is smaller than the number of producers"
PRODUCE_OPTS=(--acks all --linger-ms 5 --batch-size 1000000 --record-size "$MSG_SIZE")

check_disk "$PHASE_DIR" $(( (TOTAL + BASE_COUNT) * MSG_SIZE + (1 << 30) )) "scale"
start_broker data

# --- idle RSS, no topics ---
sleep "$IDLE_WAIT"
broker_alive || die "the broker exited while idle (log: $BROKER_LOG)"
kv scale.idle_rss_kib "$(broker_rss_kib)"
kv scale.idle_hwm_kib "$(broker_hwm_kib)"
log "idle after ${IDLE_WAIT}s: RSS $(( $(broker_rss_kib) / 1024 )) MiB (peak since start $(( $(broker_hwm_kib) / 1024 )) MiB)"

# --- baseline: one partition, same client ---
create_topic scale-base --partitions 1
measure_begin
vbench scale-base produce --topic scale-base --partitions 1 --count "$BASE_COUNT" "${PRODUCE_OPTS[@]}"
[[ "$(jget .failed)" == 0 ]] || die "scale-base: $(jget .failed) records failed"
measure_end "scale baseline: vltava bench produce ×1, 1 partition, acks=all" "$(jget .bytes)" "$(jget .mb_per_sec)" "$(jget .records_per_sec)"
kv scale.base.mbps "$(jget .mb_per_sec)"
delete_topic scale-base

# --- topics ---
t0="$(now_s)"
topic_list=""
rdk_topics=()
for ((i = 0; i < TOPICS; i++)); do
    create_topic "scale-$i" --partitions "$PARTS"
    topic_list+="${topic_list:+,}scale-$i"
    rdk_topics+=(-t "scale-$i")
done
kv scale.create_s "$(elapsed_since "$t0")"
kv scale.partitions "$((TOPICS * PARTS))"
kv scale.topics_rss_kib "$(broker_rss_kib)"
log "created $TOPICS topics × $PARTS partitions in $(elapsed_since "$t0") s; broker RSS $(( $(broker_rss_kib) / 1024 )) MiB"

# --- consumers: one group over every topic, tailing from the start ---
consumer_pids=()
for ((c = 0; c < CONSUMERS; c++)); do
    # stdbuf: rdkafka_performance's stdout is a file; line buffering lets us follow its progress.
    "${BOUNDED[@]}" stdbuf -oL "$RDKPERF" -G vltava-bench-scale "${rdk_topics[@]}" -b "$BOOTSTRAP" -i 200 \
        >"$PHASE_DIR/scale-consumer-$c.txt" 2>&1 &
    consumer_pids+=($!)
    track "$!"
done

assigned_partitions() {
    # Partitions currently assigned over all consumers: per consumer, the count of its last
    # rebalance event ("% Group rebalanced (EAGER): 125 new partition(s) assigned"; "revoked" = 0).
    local c n sum=0
    for ((c = 0; c < CONSUMERS; c++)); do
        n="$(awk '/Group rebalanced/ { cur = (/assigned/ ? $5 : 0) } END { print cur + 0 }' "$PHASE_DIR/scale-consumer-$c.txt")"
        sum=$((sum + n))
    done
    echo "$sum"
}
consumed_records() {
    local c n sum=0
    for ((c = 0; c < CONSUMERS; c++)); do
        n="$( { grep 'consumed in' "$PHASE_DIR/scale-consumer-$c.txt" || true; } | tail -1 | sed -n 's/^% \([0-9]*\) messages .*/\1/p')"
        sum=$((sum + ${n:-0}))
    done
    echo "$sum"
}

t0="$(now_s)"
while (( $(assigned_partitions) != TOPICS * PARTS )); do
    for pid in "${consumer_pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || fail_with_output "$PHASE_DIR/scale-consumer-0.txt" "a consumer exited before the group was stable"
    done
    if awk -v e="$(elapsed_since "$t0")" 'BEGIN { exit !(e > 90) }'; then
        fail_with_output "$PHASE_DIR/scale-consumer-0.txt" "the consumer group did not assign all $((TOPICS * PARTS)) partitions within 90 s (assigned: $(assigned_partitions))"
    fi
    sleep 0.2
done
kv scale.group_s "$(elapsed_since "$t0")"
log "consumer group stable after $(elapsed_since "$t0") s: $CONSUMERS members, $((TOPICS * PARTS)) partitions"

# --- the load ---
measure_begin
t_start="$(now_s)"
producer_pids=()
for ((p = 0; p < PRODUCERS; p++)); do
    "${BOUNDED[@]}" "$VLTAVA" bench produce --topic "$topic_list" --count "$PER" "${PRODUCE_OPTS[@]}" \
        --json --bootstrap-server "$BOOTSTRAP" >"$PHASE_DIR/scale-producer-$p.json" 2>"$PHASE_DIR/scale-producer-$p.stderr" &
    producer_pids+=($!)
    track "$!"
done
log "$PRODUCERS producers × $PER records over $topic_list (acks=all, linger.ms=5); $CONSUMERS consumers tailing"
failed=0
for ((p = 0; p < PRODUCERS; p++)); do
    wait "${producer_pids[$p]}" || { log "producer $p exited with status $?"; failed=1; }
done
broker_alive || die "the broker died under the scale load (log: $BROKER_LOG)"
[[ $failed -eq 0 ]] || fail_with_output "$PHASE_DIR/scale-producer-0.stderr" "a scale producer failed"
log "producers done after $(elapsed_since "$t_start") s; waiting for the consumers (at most ${DRAIN}s)"

t_drain="$(now_s)"
consumed=0
while :; do
    consumed="$(consumed_records)"
    if ((consumed >= TOTAL)); then break; fi
    if awk -v e="$(elapsed_since "$t_drain")" -v d="$DRAIN" 'BEGIN { exit !(e > d) }'; then
        log "consumers fell behind: $consumed of $TOTAL records after ${DRAIN}s"
        break
    fi
    sleep 0.1
done
consume_secs="$(elapsed_since "$t_start")"
# SIGINT: rdkafka_performance leaves the group, closes and prints its final count (timeout
# passes the signal on, and sends SIGKILL 10 s later if the consumer is still there).
t_stop="$(now_s)"
for pid in "${consumer_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
for pid in "${consumer_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
kv scale.consumer_stop_s "$(elapsed_since "$t_stop")"
log "consumers stopped in $(elapsed_since "$t_stop") s"
consumed="$(consumed_records)"

total_bytes=0; max_s=0
for ((p = 0; p < PRODUCERS; p++)); do
    OUT="$PHASE_DIR/scale-producer-$p.json"
    jq -e . "$OUT" >/dev/null 2>&1 || fail_with_output "$PHASE_DIR/scale-producer-$p.stderr" "producer $p wrote no JSON result"
    [[ "$(jget .records)" == "$PER" && "$(jget .failed)" == 0 ]] \
        || die "producer $p: $(jget .records) of $PER acknowledged, $(jget .failed) failed"
    total_bytes=$((total_bytes + $(jget .bytes)))
    max_s="$(awk -v a="$max_s" -v b="$(jget .seconds)" 'BEGIN { print (b > a ? b : a) }')"
done
# Aggregate: all bytes over the slowest producer's time (they start together).
mbps="$(awk -v b="$total_bytes" -v s="$max_s" 'BEGIN { printf "%.2f", b / s / 1e6 }')"
recs="$(awk -v n="$TOTAL" -v s="$max_s" 'BEGIN { printf "%.0f", n / s }')"
measure_end "scale: $PRODUCERS producers + $CONSUMERS consumers, $((TOPICS * PARTS)) partitions, acks=all" "$total_bytes" "$mbps" "$recs"
kv scale.mbps "$mbps"
kv scale.peak_rss_kib "$(broker_hwm_kib)"
kv scale.produced "$TOTAL"
kv scale.consumed "$consumed"
kv scale.consume_mbps "$(awk -v n="$consumed" -v sz="$MSG_SIZE" -v s="$consume_secs" 'BEGIN { printf "%.2f", n * sz / s / 1e6 }')"
kv scale.consume_secs "$consume_secs"
kv scale.producers "$PRODUCERS"
kv scale.consumers "$CONSUMERS"
sleep 1
kv scale.after_rss_kib "$(broker_rss_kib)"
stop_broker
