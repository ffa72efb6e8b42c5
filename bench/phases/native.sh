#!/usr/bin/env bash
# Phase "native" (target 7): `vltava bench produce` (the native client) vs rdkafka_performance,
# both 1 KiB records, 1 partition, acks=1, linger.ms=5, batch.size=1000000, against the same
# broker, each to its own topic (deleted after its run).
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

COUNT="${BENCH_NATIVE_COUNT:-${BENCH_COUNT:?}}"

check_disk "$PHASE_DIR" $(( COUNT * MSG_SIZE + (512 << 20) )) "native ($COUNT records, one run at a time)"
start_broker data

create_topic native-rdkafka --partitions 1
measure_begin
rdk_produce native-rdkafka "$COUNT" -t native-rdkafka -p 0 -a 1 -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=100000
measure_end "native: produce, rdkafka_performance, acks=1" $((COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"
kv native.rdkafka.mbps "$RDK_MBPS"
delete_topic native-rdkafka

create_topic native-vltava --partitions 1
measure_begin
vbench native-vltava produce --topic native-vltava --partitions 1 --record-size "$MSG_SIZE" \
    --acks 1 --linger-ms 5 --batch-size 1000000 --count "$COUNT"
[[ "$(jget .records)" == "$COUNT" && "$(jget .failed)" == 0 ]] \
    || die "native-vltava: $(jget .records) of $COUNT acknowledged, $(jget .failed) failed"
measure_end "native: produce, vltava bench produce, acks=1" "$(jget .bytes)" "$(jget .mb_per_sec)" "$(jget .records_per_sec)"
kv native.vltava.mbps "$(jget .mb_per_sec)"
kv native.vltava.p99 "$(jget .latency_ms.p99)"
delete_topic native-vltava
stop_broker
