#!/usr/bin/env bash
# Phase "peer" (--peer): the produce run of target 1 (one rdkafka_performance, 1 partition,
# acks=all, linger.ms=5, 1 MB batches) against Tansu with its in-memory storage engine, for the
# "ratio to peer" column. Tansu is installed by run.sh --peer into bench/build/tansu.
# shellcheck source=bench/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

: "${TANSU:?}"
# Tansu's memory engine keeps every record in RAM: at most 2,000,000 records (2 GB) by default.
COUNT="${BENCH_PEER_COUNT:-$((BENCH_COUNT < 2000000 ? BENCH_COUNT : 2000000))}"

BROKER_PORT="$(free_port)"
BOOTSTRAP="127.0.0.1:$BROKER_PORT"
BROKER_LOG="$PHASE_DIR/tansu.stderr"
"$TANSU" broker --cluster-id vltava-bench-peer \
    --listener-url "tcp://$BOOTSTRAP" --advertised-listener-url "tcp://$BOOTSTRAP" \
    --storage-engine "memory://tansu/" </dev/null >"$PHASE_DIR/tansu.stdout" 2>"$BROKER_LOG" &
BROKER_PID=$!
track "$BROKER_PID"
wait_for_port "$BROKER_PORT" "$BROKER_PID" 60 || die "tansu did not listen on $BOOTSTRAP within 60 s (log: $BROKER_LOG)"
log "tansu pid $BROKER_PID listening on $BOOTSTRAP"

# CreateTopics through the native admin client (Tansu answers the Kafka API).
create_topic peer-1 --partitions 1 --replication-factor 1
measure_begin
rdk_produce peer-single "$COUNT" -t peer-1 -p 0 -a -1 -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=100000
measure_end "peer: Tansu (memory storage), produce, 1 partition, acks=all, rdkafka ×1" $((COUNT * MSG_SIZE)) "$RDK_MBPS" "$RDK_MSGS"
kv peer.mbps "$RDK_MBPS"
kv peer.version "$("$TANSU" --version 2>/dev/null | head -1 || true)"
stop_broker
