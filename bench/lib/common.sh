# shellcheck shell=bash disable=SC2034  # variables set here are read by the phase scripts
# Helpers shared by the phase scripts in bench/phases/ (sourced, never run). run.sh exports the
# environment they rely on:
#   VLTAVA RDKPERF          the broker binary and rdkafka_performance
#   PHASE PHASE_DIR         this phase's name and its own directory (raw output, broker data)
#   MSG_SIZE CMD_TIMEOUT NICE KEEP_DATA and the BENCH_* knobs of the phases
# A phase reports through two files of its directory:
#   results      key=value lines (figures the targets table is built from)
#   measure.tsv  one line per measured step: label, MB/s, records/s, payload bytes,
#                broker CPU seconds, broker peak RSS KiB (tab-separated; "-" when not applicable)

set -euo pipefail

: "${VLTAVA:?run phases through bench/run.sh}" "${RDKPERF:?}" "${PHASE:?}" "${PHASE_DIR:?}"
: "${MSG_SIZE:?}" "${CMD_TIMEOUT:?}" "${KEEP_DATA:=0}"

RESULTS_FILE="$PHASE_DIR/results"
MEASURE_FILE="$PHASE_DIR/measure.tsv"
PIDS_FILE="$PHASE_DIR/pids"
CLK_TCK="$(getconf CLK_TCK)"

log() { printf '[bench %s %s] %s\n' "$(date -u +%H:%M:%S)" "$PHASE" "$*" >&2; }
kv() { printf '%s=%s\n' "$1" "$2" >>"$RESULTS_FILE"; }
die() {
    log "ERROR: $*"
    kv error "$*"
    exit 1
}

# Every process a phase starts is tracked here, so that the phase's EXIT trap (and run.sh,
# should the phase itself be killed) can stop exactly those processes and no others.
TRACKED_PIDS=()
track() {
    TRACKED_PIDS+=("$1")
    echo "$1" >>"$PIDS_FILE"
}

# bounded CMD...: CMD with a time limit (CMD_TIMEOUT s, then SIGKILL 10 s later). --foreground
# keeps CMD in the phase's process group, so run.sh's phase timeout reaches it too.
# In the background use "${BOUNDED[@]}" CMD... & instead: then $! is timeout itself (which passes
# SIGINT and SIGTERM on to CMD), not a subshell running the function.
BOUNDED=(timeout --foreground --kill-after=10 "$CMD_TIMEOUT")
bounded() { "${BOUNDED[@]}" "$@"; }

now_s() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.3f", b - a }'; }

# shellcheck source=bench/lib/net.sh
source "$(dirname "${BASH_SOURCE[0]}")/net.sh"

# check_disk DIR BYTES WHAT: fails the phase when the file system of DIR has less than BYTES free.
check_disk() {
    local dir=$1 need=$2 what=$3 avail
    avail=$(( $(df -Pk "$dir" | awk 'NR == 2 { print $4 }') * 1024 ))
    if (( avail < need )); then
        die "$what needs $(( need >> 20 )) MiB free in $dir, only $(( avail >> 20 )) MiB available (lower the BENCH_* size or set TMPDIR)"
    fi
    log "disk: $(( avail >> 20 )) MiB free in $dir, $what needs $(( need >> 20 )) MiB"
}

# ----------------------------------------------------------------------------------------
# The broker
# ----------------------------------------------------------------------------------------

BROKER_PID=""
BROKER_PORT=""
BROKER_DATA=""
BROKER_LOG=""
BOOTSTRAP=""
BROKER_STARTS=0

# start_broker NAME [serve args...]: a fresh `vltava serve` on a free port with its data in
# $PHASE_DIR/NAME; sets BROKER_PID, BROKER_PORT, BROKER_DATA, BOOTSTRAP.
start_broker() {
    local name=$1; shift
    BROKER_DATA="$PHASE_DIR/$name"
    mkdir -p "$BROKER_DATA"
    BROKER_PORT="${BENCH_PORT:-$(free_port)}"
    BOOTSTRAP="127.0.0.1:$BROKER_PORT"
    launch_broker "$@"
    wait_for_port "$BROKER_PORT" "$BROKER_PID" 60 \
        || die "broker did not listen on $BOOTSTRAP within 60 s (log: $BROKER_LOG)"
    log "broker pid $BROKER_PID listening on $BOOTSTRAP (data: $BROKER_DATA)"
}

# launch_broker [serve args...]: starts `vltava serve` on BROKER_PORT / BROKER_DATA and returns at
# once (no wait); a restart of the same data directory reuses this.
BROKER_ARGS=()
launch_broker() {
    if [[ $# -gt 0 ]]; then BROKER_ARGS=("$@"); fi
    BROKER_STARTS=$((BROKER_STARTS + 1))
    BROKER_LOG="$PHASE_DIR/broker-$BROKER_STARTS.stderr"
    "$VLTAVA" serve --listen "$BOOTSTRAP" --data-dir "$BROKER_DATA" "${BROKER_ARGS[@]}" \
        </dev/null >"$PHASE_DIR/broker-$BROKER_STARTS.stdout" 2>"$BROKER_LOG" &
    BROKER_PID=$!
    track "$BROKER_PID"
}

broker_alive() { [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; }

# stop_broker [TERM|KILL]: stops the broker and waits for it (SIGKILL after 15 s of SIGTERM).
# Sets STOP_SECS (how long the exit took) and STOP_STATUS.
stop_broker() {
    local sig=${1:-TERM} t0 i
    STOP_SECS=0; STOP_STATUS=0
    broker_alive || { BROKER_PID=""; return 0; }
    t0="$(now_s)"
    kill -"$sig" "$BROKER_PID" 2>/dev/null || true
    for ((i = 0; i < 750; i++)); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.02; done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        log "broker ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$BROKER_PID" 2>/dev/null || true
    fi
    wait "$BROKER_PID" 2>/dev/null || STOP_STATUS=$?
    STOP_SECS="$(elapsed_since "$t0")"
    BROKER_PID=""
}

broker_cpu_ticks() {
    # utime + stime (fields 14 and 15 of /proc/PID/stat, counted after the ')' ending the name).
    local stat
    stat="$(cat "/proc/$BROKER_PID/stat")"
    stat="${stat##*) }"
    awk '{ print $12 + $13 }' <<<"$stat"
}
broker_status_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$BROKER_PID/status"; }
broker_hwm_kib() { broker_status_kib VmHWM; }
broker_rss_kib() { broker_status_kib VmRSS; }
reset_broker_hwm() {
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0); best effort.
    echo 5 >"/proc/$BROKER_PID/clear_refs" 2>/dev/null || true
}

# measure_begin / measure_end LABEL PAYLOAD_BYTES MBPS RECS: one row of the measurements table
# with the broker's CPU time and peak RSS over the step.
MEASURE_CPU0=0
measure_begin() {
    broker_alive || die "the broker is not running (log: $BROKER_LOG)"
    reset_broker_hwm
    MEASURE_CPU0="$(broker_cpu_ticks)"
}
measure_end() {
    local label=$1 payload=$2 mbps=$3 recs=$4 cpu1 cpu_s hwm
    broker_alive || die "the broker died during '$label' (log: $BROKER_LOG)"
    cpu1="$(broker_cpu_ticks)"
    hwm="$(broker_hwm_kib)"
    cpu_s="$(awk -v a="$MEASURE_CPU0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$mbps" "$recs" "$payload" "$cpu_s" "$hwm" >>"$MEASURE_FILE"
    log "$label: $mbps MB/s, $recs records/s, broker CPU ${cpu_s}s, peak RSS $((hwm / 1024)) MiB"
}

# ----------------------------------------------------------------------------------------
# Clients
# ----------------------------------------------------------------------------------------

vltava_cli() { bounded "$VLTAVA" "$@" --bootstrap-server "$BOOTSTRAP"; }

create_topic() {
    local topic=$1; shift
    vltava_cli topic create "$topic" "$@" >>"$PHASE_DIR/admin.txt" 2>&1 \
        || die "vltava topic create $topic $* failed: $(tail -1 "$PHASE_DIR/admin.txt")"
}

delete_topic() {
    # Deleting a topic unlinks its files, which also drops their dirty pages: the next step does
    # not pay for the writeback of this one's data. Best effort.
    vltava_cli topic delete "$1" >>"$PHASE_DIR/admin.txt" 2>&1 || log "could not delete topic $1"
}

# Output file of the last client run, and what was parsed from it.
OUT=""
RDK_DELIVERED=0; RDK_FAILED=0; RDK_MS=0; RDK_MBPS=0; RDK_MSGS=0; RDK_COUNT=0; RDK_BYTES=0

fail_with_output() {
    local file=$1; shift
    log "$*; last lines of $file:"
    tail -25 "$file" >&2 || true
    die "$*"
}

# parse_rdk_produce FILE EXPECTED: reads rdkafka_performance's producer summary line
#   "% 2000000 messages produced (2048000000 bytes), 2000000 delivered (offset 0, 0 failed)
#    in 6000ms: 333333 msgs/s and 341.33 MB/s, 0 produce failures, 0 in queue, no compression"
parse_rdk_produce() {
    local file=$1 expected=$2 line
    line="$(grep 'messages produced' "$file" | tail -1 || true)"
    [[ -n "$line" ]] || fail_with_output "$file" "no producer summary line"
    RDK_DELIVERED="$(sed -n 's/.* \([0-9]*\) delivered .*/\1/p' <<<"$line")"
    RDK_FAILED="$(sed -n 's/.*, \([0-9]*\) failed).*/\1/p' <<<"$line")"
    RDK_MS="$(sed -n 's/.* in \([0-9]*\)ms: .*/\1/p' <<<"$line")"
    RDK_MSGS="$(sed -n 's/.*: \([0-9]*\) msgs\/s and.*/\1/p' <<<"$line")"
    RDK_MBPS="$(sed -n 's/.* msgs\/s and \([0-9.]*\) MB\/s.*/\1/p' <<<"$line")"
    if [[ "$RDK_DELIVERED" != "$expected" || "$RDK_FAILED" != 0 ]]; then
        fail_with_output "$file" "$RDK_DELIVERED of $expected records delivered, $RDK_FAILED failed"
    fi
}

# parse_rdk_consume FILE: the last consumer summary line
#   "% 2000000 messages (2048000000 bytes) consumed in 4000ms: 500000 msgs/s (512.00 MB/s)"
parse_rdk_consume() {
    local file=$1 line
    line="$(grep -v INTERVAL "$file" | grep 'consumed in' | tail -1 || true)"
    RDK_COUNT=0; RDK_BYTES=0; RDK_MS=0; RDK_MSGS=0; RDK_MBPS=0
    [[ -n "$line" ]] || return 1
    RDK_COUNT="$(sed -n 's/^% \([0-9]*\) messages .*/\1/p' <<<"$line")"
    RDK_BYTES="$(sed -n 's/^% [0-9]* messages (\([0-9]*\) bytes).*/\1/p' <<<"$line")"
    RDK_MS="$(sed -n 's/.* consumed in \([0-9]*\)ms: .*/\1/p' <<<"$line")"
    RDK_MSGS="$(sed -n 's/.*: \([0-9]*\) msgs\/s.*/\1/p' <<<"$line")"
    RDK_MBPS="$(sed -n 's/.* msgs\/s (\([0-9.]*\) MB\/s).*/\1/p' <<<"$line")"
}

# rdk_produce NAME COUNT ARGS...: one rdkafka_performance producer in the foreground, bounded.
rdk_produce() {
    local name=$1 count=$2; shift 2
    OUT="$PHASE_DIR/$name.txt"
    log "$name: rdkafka_performance -P -c $count $*"
    local rc=0
    bounded "$RDKPERF" -P -c "$count" -s "$MSG_SIZE" -b "$BOOTSTRAP" "$@" >"$OUT" 2>&1 || rc=$?
    broker_alive || fail_with_output "$OUT" "the broker died during $name (log: $BROKER_LOG)"
    [[ $rc -eq 0 ]] || fail_with_output "$OUT" "$name: rdkafka_performance exited with status $rc$( ((rc == 124 || rc == 137)) && echo " (timed out after ${CMD_TIMEOUT}s)")"
    parse_rdk_produce "$OUT" "$count"
}

# rdk_consume NAME COUNT ARGS...: one rdkafka_performance consumer in the foreground, bounded.
rdk_consume() {
    local name=$1 count=$2; shift 2
    OUT="$PHASE_DIR/$name.txt"
    log "$name: rdkafka_performance -C -c $count $*"
    local rc=0
    bounded "$RDKPERF" -C -c "$count" -b "$BOOTSTRAP" "$@" >"$OUT" 2>&1 || rc=$?
    broker_alive || fail_with_output "$OUT" "the broker died during $name (log: $BROKER_LOG)"
    [[ $rc -eq 0 ]] || fail_with_output "$OUT" "$name: rdkafka_performance exited with status $rc"
    parse_rdk_consume "$OUT" || fail_with_output "$OUT" "no consumer summary line"
    [[ "$RDK_COUNT" == "$count" ]] || fail_with_output "$OUT" "consumed $RDK_COUNT of $count records"
}

# vbench NAME ARGS...: `vltava bench ARGS --json` in the foreground, bounded; OUT holds the JSON.
vbench() {
    local name=$1; shift
    OUT="$PHASE_DIR/$name.json"
    log "$name: vltava bench $*"
    local rc=0
    bounded "$VLTAVA" bench "$@" --json --bootstrap-server "$BOOTSTRAP" >"$OUT" 2>"$PHASE_DIR/$name.stderr" || rc=$?
    broker_alive || fail_with_output "$PHASE_DIR/$name.stderr" "the broker died during $name (log: $BROKER_LOG)"
    [[ $rc -eq 0 ]] || fail_with_output "$PHASE_DIR/$name.stderr" "$name: vltava bench exited with status $rc"
    jq -e . "$OUT" >/dev/null 2>&1 || fail_with_output "$OUT" "$name: no JSON result"
}
jget() { jq -r "$1" "$OUT"; }

# ----------------------------------------------------------------------------------------
# Exit
# ----------------------------------------------------------------------------------------

phase_cleanup() {
    local rc=$? pid
    trap - EXIT
    stop_broker TERM || true
    for pid in "${TRACKED_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    sleep 0.2
    for pid in "${TRACKED_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    if [[ $rc -ne 0 && -n "$BROKER_LOG" && -s "$BROKER_LOG" ]]; then
        log "broker stderr (last 20 lines of $BROKER_LOG):"
        tail -20 "$BROKER_LOG" >&2 || true
    fi
    # Broker data directories are big (gigabytes): removed even after a failure unless
    # BENCH_KEEP_DATA=1. The raw tool output and broker logs beside them stay for run.sh.
    if [[ "$KEEP_DATA" != 1 ]]; then
        find "$PHASE_DIR" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
    fi
    exit "$rc"
}
trap phase_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
