#!/usr/bin/env bash
# Vltava throughput benchmark: loopback TCP ceiling (iperf3) vs. produce and consume
# throughput through a freshly started `vltava serve` (rdkafka_performance, 1 partition,
# acks=1). Prints one table and appends it to bench/RESULTS.md. See bench/README.md.
#
# Usage: bench/run.sh [--tools-only] [--no-record]
#   --tools-only   install iperf3 / build rdkafka_performance, then stop
#   --no-record    do not append the table to bench/RESULTS.md
# Environment (all optional):
#   BENCH_COUNT=5000000      messages per phase
#   BENCH_MSG_SIZE=1024      bytes per message
#   BENCH_IPERF_SECS=5       iperf3 duration
#   BENCH_PHASE_TIMEOUT=600  seconds before a phase is declared hung and killed
#   BENCH_NICE=10            niceness of the builds (cargo, make)
#   BENCH_JOBS=2             parallel jobs for the librdkafka build
#   BENCH_PORT=              broker port (default: a free one)
#   BENCH_KEEP_DATA=0        1 keeps the broker's temporary data dir
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
BUILD_DIR="$BENCH_DIR/build"

COUNT="${BENCH_COUNT:-5000000}"
MSG_SIZE="${BENCH_MSG_SIZE:-1024}"
IPERF_SECS="${BENCH_IPERF_SECS:-5}"
PHASE_TIMEOUT="${BENCH_PHASE_TIMEOUT:-600}"
NICE="${BENCH_NICE:-10}"
JOBS="${BENCH_JOBS:-2}"
KEEP_DATA="${BENCH_KEEP_DATA:-0}"

TOOLS_ONLY=0
RECORD=1
for arg in "$@"; do
    case "$arg" in
        --tools-only) TOOLS_ONLY=1 ;;
        --no-record) RECORD=0 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# 1. Tools
# ---------------------------------------------------------------------------------------

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

install_apt_packages() {
    # Arguments are COMMAND:PACKAGE; installs the Debian packages whose command is missing.
    local missing=() spec
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing from Debian: ${missing[*]}"
    # iperf3 asks whether to run as a daemon at boot: answer "no" up front.
    echo "iperf3 iperf3/start_daemon boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || die "apt-get install ${spec#*:} did not provide '${spec%%:*}'"
    done
}

RDKPERF="$BUILD_DIR/librdkafka/examples/rdkafka_performance"

build_rdkafka_performance() {
    if [[ -x "$RDKPERF" ]]; then
        return 0
    fi
    mkdir -p "$BUILD_DIR"
    local src="$BUILD_DIR/librdkafka"
    if [[ ! -f "$src/configure" ]]; then
        # A throwaway cargo project whose only purpose is to make cargo download the
        # rdkafka-sys crate, which ships the librdkafka C source.
        local fetch="$BUILD_DIR/fetch-rdkafka-sys"
        mkdir -p "$fetch/src"
        cat >"$fetch/Cargo.toml" <<'EOF'
[package]
name = "vltava-bench-fetch"
version = "0.0.0"
edition = "2021"
publish = false

# Not part of the Vltava workspace.
[workspace]

[dependencies]
rdkafka-sys = { version = "4", default-features = false }
EOF
        echo 'fn main() {}' >"$fetch/src/main.rs"
        log "fetching the rdkafka-sys crate (librdkafka source) with cargo"
        (cd "$fetch" && cargo fetch --quiet)
        local pkgid version cargo_home
        pkgid="$(cd "$fetch" && cargo pkgid rdkafka-sys)"   # ...#rdkafka-sys@4.10.0+2.12.1
        version="${pkgid##*@}"
        cargo_home="${CARGO_HOME:-$HOME/.cargo}"
        local candidates=("$cargo_home"/registry/src/*/"rdkafka-sys-$version"/librdkafka)
        [[ -f "${candidates[0]}/configure" ]] \
            || die "librdkafka source not found under $cargo_home/registry/src/*/rdkafka-sys-$version"
        log "copying librdkafka source from ${candidates[0]}"
        rm -rf "$src.tmp"
        cp -a "${candidates[0]}" "$src.tmp"
        chmod -R u+w "$src.tmp"
        mv "$src.tmp" "$src"
    fi
    if [[ ! -f "$src/Makefile.config" ]]; then
        log "configuring librdkafka (no SSL, GSSAPI, curl; zlib/zstd if their headers exist)"
        (cd "$src" && ./configure --no-download --disable-ssl --disable-gssapi --disable-curl \
            >"$BUILD_DIR/librdkafka-configure.log" 2>&1) \
            || { tail -30 "$BUILD_DIR/librdkafka-configure.log" >&2; rm -f "$src/Makefile.config"; die "librdkafka configure failed (log: $BUILD_DIR/librdkafka-configure.log)"; }
    fi
    log "building librdkafka + rdkafka_performance (a few minutes; log: $BUILD_DIR/librdkafka-make.log)"
    # LIBSUBDIRS=src: the C library only, the C++ wrapper is not needed.
    (cd "$src" && nice -n "$NICE" make -j"$JOBS" libs LIBSUBDIRS=src \
        && nice -n "$NICE" make -C examples rdkafka_performance) \
        >"$BUILD_DIR/librdkafka-make.log" 2>&1 \
        || { tail -30 "$BUILD_DIR/librdkafka-make.log" >&2; die "librdkafka build failed"; }
    [[ -x "$RDKPERF" ]] || die "build finished but $RDKPERF is missing"
}

install_apt_packages iperf3:iperf3 jq:jq ss:iproute2 make:make cc:gcc
build_rdkafka_performance
log "tools: $(iperf3 --version | head -1); rdkafka_performance $("$RDKPERF" 2>&1 | sed -n 's/^librdkafka version \([^ ]*\).*/\1/p')"

if [[ $TOOLS_ONLY -eq 1 ]]; then
    log "tools ready ($RDKPERF)"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# 2. Broker
# ---------------------------------------------------------------------------------------

log "building the broker (cargo build --release -p vltava-cli)"
(cd "$REPO_DIR" && nice -n "$NICE" cargo build --release --quiet -p vltava-cli) \
    || die "cargo build --release -p vltava-cli failed"
VLTAVA="$REPO_DIR/target/release/vltava"
[[ -x "$VLTAVA" ]] || die "$VLTAVA missing after the build"

free_port() {
    # A port the kernel considers free right now (small race until the server binds it).
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return 0
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
    done
    die "no free port found"
}

wait_for_port() {
    # Waits until something listens on 127.0.0.1:PORT, judged by `ss` (no probe connection,
    # which a one-shot iperf3 server would take for its client); fails early if PID exits.
    local port=$1 pid=$2 secs=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        if ss -Htln "sport = :$port" | grep -q .; then return 0; fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/vltava-bench.XXXXXX")"
DATA_DIR="$WORK_DIR/data"
mkdir -p "$DATA_DIR"
BROKER_LOG="$WORK_DIR/broker.stderr"
BROKER_PID=""
IPERF_PID=""

cleanup() {
    local rc=$?
    if [[ -n "$IPERF_PID" ]] && kill -0 "$IPERF_PID" 2>/dev/null; then kill "$IPERF_PID" 2>/dev/null || true; fi
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            log "broker ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$BROKER_PID" 2>/dev/null || true
        fi
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -s "$BROKER_LOG" ]]; then
        log "broker stderr (last 40 lines of $BROKER_LOG):"
        tail -40 "$BROKER_LOG" >&2 || true
    fi
    if [[ "$KEEP_DATA" == 1 || $rc -ne 0 ]]; then
        log "kept $WORK_DIR (broker data, logs, tool output)"
    else
        rm -rf "$WORK_DIR"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
# 3. Measurements
# ---------------------------------------------------------------------------------------

CLK_TCK="$(getconf CLK_TCK)"

broker_cpu_ticks() {
    # utime + stime of the broker, in clock ticks (fields 14 and 15 of /proc/PID/stat;
    # parsed after the ')' that ends the command name).
    local stat
    stat="$(cat "/proc/$BROKER_PID/stat")"
    stat="${stat##*) }"
    awk '{ print $12 + $13 }' <<<"$stat"
}

broker_hwm_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$BROKER_PID/status"
}

reset_broker_hwm() {
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0); best effort.
    echo 5 >"/proc/$BROKER_PID/clear_refs" 2>/dev/null && return 0
    return 1
}

# --- 3a. iperf3 loopback, one stream ---
IPERF_PORT="$(free_port)"
log "iperf3: one TCP stream over loopback for ${IPERF_SECS}s (port $IPERF_PORT)"
iperf3 -s -1 -p "$IPERF_PORT" >"$WORK_DIR/iperf3-server.txt" 2>&1 &
IPERF_PID=$!
wait_for_port "$IPERF_PORT" "$IPERF_PID" 10 || die "iperf3 server did not start: $(cat "$WORK_DIR/iperf3-server.txt")"
iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$IPERF_SECS" -J >"$WORK_DIR/iperf3.json" \
    || die "iperf3 client failed: $(jq -r '.error // empty' "$WORK_DIR/iperf3.json" 2>/dev/null)"
wait "$IPERF_PID" 2>/dev/null || true
IPERF_PID=""
IPERF_MBPS="$(jq -r '.end.sum_received.bits_per_second / 8 / 1e6' "$WORK_DIR/iperf3.json")"
[[ "$IPERF_MBPS" =~ ^[0-9.]+$ ]] || die "could not read iperf3 bandwidth from $WORK_DIR/iperf3.json"
log "iperf3 loopback: $(printf '%.0f' "$IPERF_MBPS") MB/s"

# --- broker start ---
BROKER_PORT="${BENCH_PORT:-$(free_port)}"
log "starting $VLTAVA serve --listen 127.0.0.1:$BROKER_PORT --data-dir $DATA_DIR"
"$VLTAVA" serve --listen "127.0.0.1:$BROKER_PORT" --data-dir "$DATA_DIR" \
    </dev/null >"$WORK_DIR/broker.stdout" 2>"$BROKER_LOG" &
BROKER_PID=$!
wait_for_port "$BROKER_PORT" "$BROKER_PID" 30 \
    || die "broker did not listen on 127.0.0.1:$BROKER_PORT within 30 s"
log "broker pid $BROKER_PID is listening"

TOPIC="bench-$(date -u +%Y%m%d%H%M%S)-$$"
BOOTSTRAP="127.0.0.1:$BROKER_PORT"
PAYLOAD_GB="$(awk -v c="$COUNT" -v s="$MSG_SIZE" 'BEGIN { printf "%.6f", c * s / 1e9 }')"

# Runs one rdkafka_performance phase; sets PHASE_OUT, PHASE_CPU_S, PHASE_HWM_KIB.
run_phase() {
    local name=$1; shift
    local out="$WORK_DIR/rdkafka_performance-$name.txt"
    local cpu0 cpu1 rc=0
    reset_broker_hwm || true
    cpu0="$(broker_cpu_ticks)"
    log "$name: rdkafka_performance $*"
    timeout --kill-after=10 "$PHASE_TIMEOUT" "$RDKPERF" "$@" >"$out" 2>&1 || rc=$?
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        log "$name: the broker died during the phase; rdkafka_performance printed:"
        tail -40 "$out" >&2
        die "broker exited during $name"
    fi
    cpu1="$(broker_cpu_ticks)"
    PHASE_HWM_KIB="$(broker_hwm_kib)"
    PHASE_CPU_S="$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
    PHASE_OUT="$out"
    if [[ $rc -ne 0 ]]; then
        if [[ $rc -eq 124 || $rc -eq 137 ]]; then
            log "$name: rdkafka_performance did not finish within ${PHASE_TIMEOUT}s (killed)"
        else
            log "$name: rdkafka_performance exited with status $rc"
        fi
        log "$name: rdkafka_performance output (last 40 lines of $out):"
        tail -40 "$out" >&2
        die "$name phase failed"
    fi
}

# --- 3b. produce ---
run_phase produce -P -t "$TOPIC" -p 0 -s "$MSG_SIZE" -c "$COUNT" -b "$BOOTSTRAP" -a 1 \
    -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=100000
# "% 2000000 messages produced (2048000000 bytes), 2000000 delivered (offset 0, 0 failed)
#  in 6000ms: 333333 msgs/s and 341.33 MB/s, 0 produce failures, 0 in queue, no compression"
P_LINE="$(grep 'messages produced' "$PHASE_OUT" | tail -1)"
[[ -n "$P_LINE" ]] || { tail -40 "$PHASE_OUT" >&2; die "no summary line in the produce output"; }
P_DELIVERED="$(sed -n 's/.* \([0-9]*\) delivered .*/\1/p' <<<"$P_LINE")"
P_FAILED="$(sed -n 's/.*, \([0-9]*\) failed).*/\1/p' <<<"$P_LINE")"
P_MSGS="$(sed -n 's/.*: \([0-9]*\) msgs\/s and.*/\1/p' <<<"$P_LINE")"
P_MBPS="$(sed -n 's/.* msgs\/s and \([0-9.]*\) MB\/s.*/\1/p' <<<"$P_LINE")"
if [[ "$P_DELIVERED" != "$COUNT" || "$P_FAILED" != 0 ]]; then
    tail -40 "$PHASE_OUT" >&2
    die "produce: $P_DELIVERED of $COUNT delivered, $P_FAILED failed"
fi
P_CPU_S="$PHASE_CPU_S"; P_HWM_KIB="$PHASE_HWM_KIB"
log "produce: $P_MBPS MB/s, $P_MSGS msgs/s"

# --- 3c. consume (same topic, from the beginning) ---
run_phase consume -C -t "$TOPIC" -p 0 -o beginning -c "$COUNT" -b "$BOOTSTRAP"
# "% 2000000 messages (2048000000 bytes) consumed in 4000ms: 500000 msgs/s (512.00 MB/s)"
C_LINE="$(grep -v INTERVAL "$PHASE_OUT" | grep 'consumed in' | tail -1)"
[[ -n "$C_LINE" ]] || { tail -40 "$PHASE_OUT" >&2; die "no summary line in the consume output"; }
C_COUNT="$(sed -n 's/^% \([0-9]*\) messages .*/\1/p' <<<"$C_LINE")"
C_MSGS="$(sed -n 's/.*: \([0-9]*\) msgs\/s.*/\1/p' <<<"$C_LINE")"
C_MBPS="$(sed -n 's/.* msgs\/s (\([0-9.]*\) MB\/s).*/\1/p' <<<"$C_LINE")"
[[ "$C_COUNT" == "$COUNT" ]] || { tail -40 "$PHASE_OUT" >&2; die "consume: got $C_COUNT of $COUNT messages"; }
C_CPU_S="$PHASE_CPU_S"; C_HWM_KIB="$PHASE_HWM_KIB"
log "consume: $C_MBPS MB/s, $C_MSGS msgs/s"

# ---------------------------------------------------------------------------------------
# 4. Report
# ---------------------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$IPERF_MBPS" 'BEGIN { printf "%.3f", a / b }'; }
per_gb() { awk -v c="$1" -v g="$PAYLOAD_GB" 'BEGIN { printf "%.2f", c / g }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

IPERF_RATE="$(printf '%.0f' "$IPERF_MBPS")"
REV="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=""
if [[ -n "$(git -C "$REPO_DIR" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    DIRTY=" (+ uncommitted changes)"
fi
NOW="$(date -u)"

TABLE="$(cat <<EOF
| phase | MB/s | records/s | ratio to iperf3 | broker CPU s per GB | broker peak RSS MiB |
|---|---:|---:|---:|---:|---:|
| iperf3 loopback, 1 stream | $IPERF_RATE | – | 1.000 | – | – |
| produce (acks=1) | $P_MBPS | $P_MSGS | $(ratio "$P_MBPS") | $(per_gb "$P_CPU_S") | $(mib "$P_HWM_KIB") |
| consume | $C_MBPS | $C_MSGS | $(ratio "$C_MBPS") | $(per_gb "$C_CPU_S") | $(mib "$C_HWM_KIB") |
EOF
)"

SETUP="$COUNT × $MSG_SIZE B records ($PAYLOAD_GB GB payload per phase), 1 partition, linger.ms=5, acks=1; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "## $NOW — $REV$DIRTY"
echo
echo "$SETUP"
echo
echo "$TABLE"
echo

if [[ $RECORD -eq 1 ]]; then
    RESULTS="$BENCH_DIR/RESULTS.md"
    if [[ ! -f "$RESULTS" ]]; then
        printf '# Benchmark results\n\nAppended by `bench/run.sh`; newest last. See README.md for how to read them.\n' >"$RESULTS"
    fi
    {
        echo
        echo "## $NOW — $REV$DIRTY"
        echo
        echo "$SETUP"
        echo
        echo "$TABLE"
    } >>"$RESULTS"
    log "appended to $RESULTS"
fi
