#!/usr/bin/env bash
# Phase "latency" (target 3): a fixed BENCH_LATENCY_RATE records/s (20,000 of 1 KiB = 20 MB/s),
# linger.ms=0, acks=all, for BENCH_LATENCY_SECS seconds each: p99 of the produce acknowledgement
# (`vltava bench produce --rate`) and p99 end to end (`vltava bench e2e --rate`).
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

RATE="${BENCH_LATENCY_RATE:-20000}"
SECS="${BENCH_LATENCY_SECS:-15}"
E2E_COUNT="$(awk -v r="$RATE" -v s="$SECS" 'BEGIN { printf "%.0f", r * s }')"

start_broker data

measure_begin
vbench latency-produce produce --topic latency-produce --partitions 1 --record-size "$MSG_SIZE" \
    --acks all --linger-ms 0 --rate "$RATE" --duration "$SECS"
[[ "$(jget .failed)" == 0 ]] || die "latency-produce: $(jget .failed) records failed"
measure_end "latency: produce at $RATE records/s, linger.ms=0, acks=all" "$(jget .bytes)" "$(jget .mb_per_sec)" "$(jget .records_per_sec)"
kv latency.produce.p50 "$(jget .latency_ms.p50)"
kv latency.produce.p99 "$(jget .latency_ms.p99)"
kv latency.produce.p99_9 "$(jget .latency_ms.p99_9)"
kv latency.produce.max "$(jget .latency_ms.max)"
kv latency.produce.rate "$(jget .records_per_sec)"

measure_begin
vbench latency-e2e e2e --topic latency-e2e --partitions 1 --record-size "$MSG_SIZE" \
    --acks all --linger-ms 0 --rate "$RATE" --count "$E2E_COUNT"
measure_end "latency: end to end at $RATE records/s, linger.ms=0, acks=all" "$(jget .bytes)" "$(jget .mb_per_sec)" "$(jget .records_per_sec)"
kv latency.e2e.p50 "$(jget .latency_ms.p50)"
kv latency.e2e.p99 "$(jget .latency_ms.p99)"
kv latency.e2e.p99_9 "$(jget .latency_ms.p99_9)"
kv latency.e2e.max "$(jget .latency_ms.max)"
kv latency.e2e.rate "$(jget .records_per_sec)"
kv latency.target_rate "$RATE"
stop_broker
