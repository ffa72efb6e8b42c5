#!/usr/bin/env bash
# Phase "consume" (target 2): fill one partition with BENCH_CONSUME_BYTES (1 GiB) of records,
# then read it from the beginning twice with rdkafka_performance; the second read, from the page
# cache for certain, is the figure. Ratio to iperf3: computed by run.sh.
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

BYTES="${BENCH_CONSUME_BYTES:-1073741824}"
COUNT=$((BYTES / MSG_SIZE))
((COUNT > 0)) || die "BENCH_CONSUME_BYTES ($BYTES) is smaller than one record"

check_disk "$PHASE_DIR" $(( COUNT * MSG_SIZE + (512 << 20) )) "consume ($COUNT records)"
start_broker data
create_topic consume-1 --partitions 1
measure_begin
rdk_produce consume-fill "$COUNT" -t consume-1 -p 0 -a 1 -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=100000
measure_end "consume: fill (acks=1, not a target)" $((COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"

for pass in 1 2; do
    measure_begin
    rdk_consume "consume-pass$pass" "$COUNT" -t consume-1 -p 0 -o beginning
    measure_end "consume, 1 partition from the page cache, read $pass" $((COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"
done
kv consume.mbps "$RDK_MBPS"
kv consume.records_per_sec "$RDK_MSGS"
kv consume.bytes "$((COUNT * MSG_SIZE))"
stop_broker
