#!/usr/bin/env bash
# Phase "durable" (target 6): produce throughput as in phase "produce" (one rdkafka_performance,
# 1 partition, acks=all, linger.ms=5) to a topic created with flush.on.append=true, then to one
# without, on the same broker. The durable run goes first, after a sync of the file system, so
# it does not pay for the writeback of other data; the topic is deleted before the second run.
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

COUNT="${BENCH_DURABLE_COUNT:-${BENCH_COUNT:?}}"
RDK_PRODUCE_OPTS=(-a -1 -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=100000)

check_disk "$PHASE_DIR" $(( COUNT * MSG_SIZE + (512 << 20) )) "durable ($COUNT records, one run at a time)"
start_broker data
create_topic durable-on --partitions 1 --config flush.on.append=true
create_topic durable-off --partitions 1
log "sync -f $PHASE_DIR (flush other dirty data before the fsync-bound run)"
bounded sync -f "$PHASE_DIR" || log "sync did not finish"

measure_begin
rdk_produce durable-on "$COUNT" -t durable-on -p 0 "${RDK_PRODUCE_OPTS[@]}"
measure_end "durable: produce, flush.on.append=true, acks=all" $((COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"
kv durable.on.mbps "$RDK_MBPS"
delete_topic durable-on

measure_begin
rdk_produce durable-off "$COUNT" -t durable-off -p 0 "${RDK_PRODUCE_OPTS[@]}"
measure_end "durable: produce, flush.on.append=false, acks=all" $((COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"
kv durable.off.mbps "$RDK_MBPS"
delete_topic durable-off
stop_broker
