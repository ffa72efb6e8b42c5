#!/usr/bin/env bash
# Vltava performance benchmark: the targets of the performance issue, measured in one run
# against freshly started `vltava serve` brokers, each beside the baseline it is judged by
# (measured in the same run). Prints a table of targets (met / not met) and a table of every
# measured step with the broker's CPU per GB and peak RSS, and appends both to bench/RESULTS.md.
# See bench/README.md.
#
# Usage: bench/run.sh [--tools-only] [--no-record] [--peer]
#   --tools-only   install iperf3 / build rdkafka_performance (and Tansu with --peer), then stop
#   --no-record    do not append the tables to bench/RESULTS.md
#   --peer         also build (cargo install, ~20 min the first time) and measure the Tansu peer
# Environment (all optional; README.md lists every knob):
#   BENCH_PHASES=produce,consume,latency,scale,restart,durable,native   phases to run (+ peer, cluster)
#   BENCH_COUNT=5000000      records per produce run (produce, durable, native, scale)
#   BENCH_MSG_SIZE=1024      bytes per record
#   BENCH_PHASE_TIMEOUT=1200 seconds before a whole phase is killed and reported
#   BENCH_CMD_TIMEOUT=600    seconds before one client command is killed
#   BENCH_KEEP_DATA=0        1 keeps the brokers' data directories
#   BENCH_VLTAVA=            use this vltava binary instead of building target/release/vltava
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
BUILD_DIR="$BENCH_DIR/build"

ALL_PHASES="produce,consume,latency,scale,restart,durable,native"
PHASES="${BENCH_PHASES:-$ALL_PHASES}"
export BENCH_COUNT="${BENCH_COUNT:-5000000}"
export MSG_SIZE="${BENCH_MSG_SIZE:-1024}"
IPERF_SECS="${BENCH_IPERF_SECS:-5}"
PHASE_TIMEOUT="${BENCH_PHASE_TIMEOUT:-1200}"
export CMD_TIMEOUT="${BENCH_CMD_TIMEOUT:-600}"
export NICE="${BENCH_NICE:-10}"
JOBS="${BENCH_JOBS:-2}"
export KEEP_DATA="${BENCH_KEEP_DATA:-0}"
PEER_BUILD_TIMEOUT="${BENCH_PEER_BUILD_TIMEOUT:-3600}"

TOOLS_ONLY=0
RECORD=1
PEER=0
for arg in "$@"; do
    case "$arg" in
        --tools-only) TOOLS_ONLY=1 ;;
        --no-record) RECORD=0 ;;
        --peer) PEER=1 ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The phases to run, in the order given; --peer adds "peer".
IFS=',' read -r -a PHASE_LIST <<<"$PHASES"
if [[ $PEER -eq 1 && ",$PHASES," != *,peer,* ]]; then PHASE_LIST+=(peer); fi
for p in "${PHASE_LIST[@]}"; do
    [[ -f "$BENCH_DIR/phases/$p.sh" ]] || die "unknown phase '$p' in BENCH_PHASES (known: $ALL_PHASES,peer,cluster)"
done
selected() { [[ " ${PHASE_LIST[*]} " == *" $1 "* ]]; }
for n in BENCH_COUNT MSG_SIZE IPERF_SECS PHASE_TIMEOUT CMD_TIMEOUT; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done

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
RDK_VERSION="$( { "$RDKPERF" 2>&1 || true; } | sed -n 's/^librdkafka version \([^ ]*\).*/\1/p')"
log "tools: $(iperf3 --version | head -1); rdkafka_performance $RDK_VERSION"

# The peer: Tansu (a Kafka-compatible broker in Rust), installed with cargo into bench/build.
TANSU="$BUILD_DIR/tansu/bin/tansu"
PEER_NOTE=""
build_tansu() {
    [[ -x "$TANSU" ]] && return 0
    log "building the peer: cargo install tansu --locked --features dynostore,libsql (about 20 min on 2 cores; log: $BUILD_DIR/tansu-install.log; at most ${PEER_BUILD_TIMEOUT}s)"
    mkdir -p "$BUILD_DIR"
    local rc=0
    timeout --kill-after=30 "$PEER_BUILD_TIMEOUT" nice -n "$NICE" \
        cargo install tansu --locked --features dynostore,libsql --root "$BUILD_DIR/tansu" \
        >"$BUILD_DIR/tansu-install.log" 2>&1 || rc=$?
    if [[ $rc -ne 0 || ! -x "$TANSU" ]]; then
        tail -15 "$BUILD_DIR/tansu-install.log" >&2 || true
        if [[ $rc -eq 124 || $rc -eq 137 ]]; then
            PEER_NOTE="cargo install tansu did not finish within ${PEER_BUILD_TIMEOUT}s"
        else
            PEER_NOTE="cargo install tansu failed (status $rc, log: $BUILD_DIR/tansu-install.log)"
        fi
        log "peer not available: $PEER_NOTE"
        return 1
    fi
}
if selected peer; then build_tansu || true; fi

if [[ $TOOLS_ONLY -eq 1 ]]; then
    log "tools ready ($RDKPERF$(selected peer && [[ -x "$TANSU" ]] && echo ", $TANSU"))"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# 2. Broker binary, work directory
# ---------------------------------------------------------------------------------------

if [[ -n "${BENCH_VLTAVA:-}" ]]; then
    VLTAVA="$(realpath "$BENCH_VLTAVA")"
    log "using $VLTAVA (BENCH_VLTAVA; not built)"
else
    log "building the broker (cargo build --release -p vltava-cli)"
    (cd "$REPO_DIR" && nice -n "$NICE" cargo build --release --quiet -p vltava-cli) \
        || die "cargo build --release -p vltava-cli failed"
    VLTAVA="$REPO_DIR/target/release/vltava"
fi
[[ -x "$VLTAVA" ]] || die "$VLTAVA missing"
export VLTAVA RDKPERF TANSU

# shellcheck source=bench/lib/net.sh
source "$BENCH_DIR/lib/net.sh"

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/vltava-bench.XXXXXX")"
IPERF_PID=""
PHASE_PID=""
ANY_FAILED=0

# kill_leftovers PIDFILE: whatever a phase started and left running (it was killed before its own
# cleanup ran). Only the PIDs it recorded, and only while they still run one of our programs.
kill_leftovers() {
    local file=$1 pid cmd alive=()
    [[ -f "$file" ]] || return 0
    while read -r pid; do
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        cmd="$( { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)"
        case "$cmd" in
            *"$VLTAVA"*|*"$RDKPERF"*|*"$TANSU"*|timeout*) kill -TERM "$pid" 2>/dev/null && alive+=("$pid") ;;
        esac
    done <"$file"
    [[ ${#alive[@]} -gt 0 ]] || return 0
    log "stopped ${#alive[@]} process(es) a phase left behind"
    sleep 2
    for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

cleanup() {
    local rc=$? d
    if [[ -n "$IPERF_PID" ]] && kill -0 "$IPERF_PID" 2>/dev/null; then kill "$IPERF_PID" 2>/dev/null || true; fi
    if [[ -n "$PHASE_PID" ]] && kill -0 "$PHASE_PID" 2>/dev/null; then
        kill -TERM "$PHASE_PID" 2>/dev/null || true   # timeout passes it on to the phase's group
        wait "$PHASE_PID" 2>/dev/null || true
    fi
    for d in "$WORK_DIR"/*/; do kill_leftovers "${d}pids"; done
    if [[ "$KEEP_DATA" == 1 || $rc -ne 0 || $ANY_FAILED -ne 0 ]]; then
        # Broker data directories are removed by the phases (unless BENCH_KEEP_DATA=1); what is
        # kept here is the tool output and broker logs.
        log "kept $WORK_DIR (tool output, broker logs$([[ "$KEEP_DATA" == 1 ]] && echo ", broker data"))"
    else
        rm -rf "$WORK_DIR"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
# 3. iperf3 loopback, one stream: the ceiling the produce and consume ratios refer to
# ---------------------------------------------------------------------------------------

IPERF_MBPS=""
if selected produce || selected consume || selected peer; then
    IPERF_PORT="$(free_port)"
    log "iperf3: one TCP stream over loopback for ${IPERF_SECS}s (port $IPERF_PORT)"
    iperf3 -s -1 -p "$IPERF_PORT" >"$WORK_DIR/iperf3-server.txt" 2>&1 &
    IPERF_PID=$!
    wait_for_port "$IPERF_PORT" "$IPERF_PID" 10 || die "iperf3 server did not start: $(cat "$WORK_DIR/iperf3-server.txt")"
    timeout 60 iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$IPERF_SECS" -J >"$WORK_DIR/iperf3.json" \
        || die "iperf3 client failed: $(jq -r '.error // empty' "$WORK_DIR/iperf3.json" 2>/dev/null)"
    wait "$IPERF_PID" 2>/dev/null || true
    IPERF_PID=""
    IPERF_MBPS="$(jq -r '.end.sum_received.bits_per_second / 8 / 1e6' "$WORK_DIR/iperf3.json")"
    [[ "$IPERF_MBPS" =~ ^[0-9.]+$ ]] || die "could not read iperf3 bandwidth from $WORK_DIR/iperf3.json"
    log "iperf3 loopback: $(printf '%.0f' "$IPERF_MBPS") MB/s"
fi

# ---------------------------------------------------------------------------------------
# 4. Phases: each a script of bench/phases/ in its own process group, bounded in time
# ---------------------------------------------------------------------------------------

declare -A R=()            # key=value figures reported by the phases
declare -A STATUS=()       # phase -> ok | failed: ... | timed out ...
LOADS=()                   # per phase: load average at its start, niced and steal CPU shares
MEASURE_ROWS="$WORK_DIR/measure.tsv"
: >"$MEASURE_ROWS"

run_phase() {
    local name=$1 dir="$WORK_DIR/$1" rc=0 t0=$SECONDS k v
    mkdir -p "$dir"
    : >"$dir/results"; : >"$dir/measure.tsv"; : >"$dir/pids"
    if [[ $name == peer && ! -x "$TANSU" ]]; then
        STATUS[$name]="not run: ${PEER_NOTE:-Tansu is not built}"
        return 0
    fi
    log "=== phase $name (at most ${PHASE_TIMEOUT}s) ==="
    local load0 stat0
    load0="$(cut -d' ' -f1 /proc/loadavg)"
    stat0="$(head -1 /proc/stat)"
    # timeout (without --foreground) makes its own process group and signals all of it: the
    # phase script, its brokers and its clients.
    PHASE="$name" PHASE_DIR="$dir" timeout --kill-after=30 "$PHASE_TIMEOUT" \
        bash "$BENCH_DIR/phases/$name.sh" </dev/null &
    PHASE_PID=$!
    wait "$PHASE_PID" || rc=$?
    PHASE_PID=""
    # How busy the machine was besides: load average at the start, and the share of all CPU
    # time that went to niced processes (other people's builds) and to steal during the phase.
    LOADS+=("$name $load0, $(awk -v a="$stat0" -v b="$(head -1 /proc/stat)" 'BEGIN {
        split(a, x); split(b, y); for (i = 2; i <= 9; i++) t += y[i] - x[i]
        if (t <= 0) t = 1
        printf "nice %.0f%%, steal %.0f%%", 100 * (y[3] - x[3]) / t, 100 * (y[9] - x[9]) / t }')")
    kill_leftovers "$dir/pids"
    while IFS='=' read -r k v; do [[ -n "$k" ]] && R[$k]="$v"; done <"$dir/results"
    cat "$dir/measure.tsv" >>"$MEASURE_ROWS"
    case $rc in
        0) STATUS[$name]=ok ;;
        124|137) STATUS[$name]="timed out after ${PHASE_TIMEOUT}s (killed)"; ANY_FAILED=1 ;;
        *) STATUS[$name]="failed: ${R[error]:-exit status $rc}"; ANY_FAILED=1 ;;
    esac
    unset 'R[error]'
    log "=== phase $name: ${STATUS[$name]} ($((SECONDS - t0)) s) ==="
}

for p in "${PHASE_LIST[@]}"; do run_phase "$p"; done

# ---------------------------------------------------------------------------------------
# 5. Report
# ---------------------------------------------------------------------------------------

num() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "–"; else printf "%.3f", a / b }'; }
# judge VALUE OP LIMIT: "met" or "not met" (OP is >= or <=).
judge() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0); print (ok ? "**met**" : "not met") }'
}
# The figure cell of a target whose phase did not give it.
missing() {
    local phase=$1
    if ! selected "$phase"; then echo "not run"; return; fi
    local s="${STATUS[$phase]:-not run}"
    [[ "$s" == ok ]] && s="no figure"
    echo "$phase: ${s//|//}"
}
has() { [[ -n "${R[$1]:-}" && "${R[$1]}" != null ]]; }

IPERF_CELL="–"
[[ -n "$IPERF_MBPS" ]] && IPERF_CELL="iperf3 $(num "$IPERF_MBPS" 0) MB/s"
PEER_MBPS="${R[peer.mbps]:-}"

# row NUM WHAT FIGURE BASELINE RATIO PEER TARGET RESULT
TARGET_ROWS=()
row() { TARGET_ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 |"); }
peer_ratio() { if [[ -n "$PEER_MBPS" ]]; then div "$1" "$PEER_MBPS"; else echo "–"; fi; }

# ratio_row NUM WHAT PHASE KEY BASELINE_VALUE BASELINE_CELL LIMIT [PEER]
ratio_row() {
    local n=$1 what=$2 phase=$3 key=$4 base=$5 base_cell=$6 limit=$7 peer=${8:-} r
    if has "$key" && [[ -n "$base" ]]; then
        r="$(div "${R[$key]}" "$base")"
        row "$n" "$what" "$(num "${R[$key]}" 1) MB/s" "$base_cell" "$r" \
            "$([[ -n "$peer" ]] && peer_ratio "${R[$key]}" || echo –)" "≥ $limit" "$(judge "$r" ">=" "$limit")"
    else
        row "$n" "$what" "$(missing "$phase")" "$base_cell" "–" "–" "≥ $limit" "–"
    fi
}
# limit_row NUM WHAT PHASE KEY UNIT DECIMALS LIMIT [DETAIL]
limit_row() {
    local n=$1 what=$2 phase=$3 key=$4 unit=$5 dec=$6 limit=$7 detail=${8:-}
    if has "$key"; then
        row "$n" "$what" "$(num "${R[$key]}" "$dec") $unit${detail:+ ($detail)}" "–" "–" "–" "≤ $limit $unit" "$(judge "${R[$key]}" "<=" "$limit")"
    else
        row "$n" "$what" "$(missing "$phase")" "–" "–" "–" "≤ $limit $unit" "–"
    fi
}
kib_to_mib() { if has "$1"; then R[$1.mib]="$(awk -v k="${R[$1]}" 'BEGIN { printf "%.1f", k / 1024 }')"; fi; }

ratio_row 1 "produce, 1 partition, acks=all, linger.ms=5, rdkafka_performance ×1" produce produce.mbps "$IPERF_MBPS" "$IPERF_CELL" 0.50 peer
ratio_row 1 "produce, same, rdkafka_performance ×${R[produce.par.procs]:-${BENCH_PRODUCE_PROCS:-2}} on the same partition" produce produce.par.mbps "$IPERF_MBPS" "$IPERF_CELL" 0.50 peer
ratio_row 2 "consume 1 partition of $(( ${R[consume.bytes]:-${BENCH_CONSUME_BYTES:-1073741824}} >> 20 )) MiB from the page cache (2nd read)" consume consume.mbps "$IPERF_MBPS" "$IPERF_CELL" 0.70

LAT_RATE="${R[latency.target_rate]:-${BENCH_LATENCY_RATE:-20000}}"
rate_note() {
    # The latency figures only count at the intended rate: flag a run that fell short.
    local key=$1 r
    has "$key" || return 0
    r="$(num "${R[$key]}" 0)"
    if awk -v a="$r" -v t="$LAT_RATE" 'BEGIN { exit !(a < 0.95 * t) }'; then
        echo "RATE NOT SUSTAINED: $r records/s"
    else
        echo "p50 $(num "${R[${key%.rate}.p50]:-0}" 2), p99.9 $(num "${R[${key%.rate}.p99_9]:-0}" 2) ms at $r records/s"
    fi
}
limit_row 3 "produce acknowledgement p99 at $LAT_RATE × $MSG_SIZE B/s, linger.ms=0, acks=all" latency latency.produce.p99 ms 2 2 "$(rate_note latency.produce.rate)"
limit_row 3 "end-to-end p99 at $LAT_RATE × $MSG_SIZE B/s, linger.ms=0, acks=all" latency latency.e2e.p99 ms 2 5 "$(rate_note latency.e2e.rate)"

SCALE_WHAT="aggregate produce, ${R[scale.partitions]:-1000} partitions, ${R[scale.producers]:-8} producers + ${R[scale.consumers]:-8} consumers (vltava bench produce; rdkafka_performance -G)"
ratio_row 4 "$SCALE_WHAT" scale scale.mbps "${R[scale.base.mbps]:-}" \
    "$(has scale.base.mbps && echo "1 partition, vltava bench produce ×1: $(num "${R[scale.base.mbps]}" 1) MB/s" || echo –)" 0.70
kib_to_mib scale.peak_rss_kib; kib_to_mib scale.idle_rss_kib
limit_row 4 "broker peak RSS under that load" scale scale.peak_rss_kib.mib MiB 0 300
limit_row 4 "broker RSS idle, no topics, ${BENCH_IDLE_WAIT:-2} s after start" scale scale.idle_rss_kib.mib MiB 1 30

RESTART_DESC="${R[restart.partitions]:-1000} partitions, $(awk -v b="${R[restart.bytes]:-${BENCH_RESTART_BYTES:-10737418240}}" 'BEGIN { printf "%.1f", b / 2^30 }') GiB"
limit_row 5 "restart after clean shutdown (SIGTERM) until topic list answers, $RESTART_DESC" restart restart.term_s s 2 2
limit_row 5 "restart after SIGKILL until topic list answers, $RESTART_DESC" restart restart.kill_s s 2 10

ratio_row 6 "produce with flush.on.append=true, 1 partition, acks=all, rdkafka_performance" durable durable.on.mbps "${R[durable.off.mbps]:-}" \
    "$(has durable.off.mbps && echo "flush.on.append=false: $(num "${R[durable.off.mbps]}" 1) MB/s" || echo –)" 0.50
ratio_row 7 "vltava bench produce, 1 partition, acks=1, linger.ms=5" native native.vltava.mbps "${R[native.rdkafka.mbps]:-}" \
    "$(has native.rdkafka.mbps && echo "rdkafka_performance: $(num "${R[native.rdkafka.mbps]}" 1) MB/s" || echo –)" 1.0

TARGETS="$(
    echo "| # | target | figure | baseline (same run) | ratio | ratio to peer | target | result |"
    echo "|---|---|---:|---|---:|---:|---|---|"
    printf '%s\n' "${TARGET_ROWS[@]}"
)"

MEASUREMENTS="$(
    echo "| step | MB/s | records/s | ratio to iperf3 | broker CPU s per GB | broker peak RSS MiB |"
    echo "|---|---:|---:|---:|---:|---:|"
    if [[ -n "$IPERF_MBPS" ]]; then echo "| iperf3 loopback, 1 stream | $(num "$IPERF_MBPS" 0) | – | 1.000 | – | – |"; fi
    while IFS=$'\t' read -r label mbps recs payload cpu hwm; do
        ratio="–"; per_gb="–"
        if [[ "$mbps" != - && -n "$IPERF_MBPS" ]]; then ratio="$(div "$mbps" "$IPERF_MBPS")"; fi
        if [[ "$payload" =~ ^[0-9]+$ && "$payload" -gt 0 ]]; then per_gb="$(awk -v c="$cpu" -v p="$payload" 'BEGIN { printf "%.2f", c / (p / 1e9) }')"; fi
        [[ "$mbps" != - ]] && mbps="$(num "$mbps" 1)"
        [[ "$recs" != - ]] && recs="$(num "$recs" 0)"
        echo "| $label | $mbps | $recs | $ratio | $per_gb | $(awk -v k="$hwm" 'BEGIN { printf "%.0f", k / 1024 }') |"
    done <"$MEASURE_ROWS"
)"

NOTES=()
if [[ ${#LOADS[@]} -gt 0 ]]; then
    loads="$(printf '%s; ' "${LOADS[@]}")"
    NOTES+=("- machine during each phase (load average at its start; share of all CPU time taken by niced processes, i.e. others' builds, and by steal): ${loads%; }")
fi
for p in "${PHASE_LIST[@]}"; do
    [[ "${STATUS[$p]:-}" == ok ]] || NOTES+=("- phase **$p**: ${STATUS[$p]:-not run}")
done
if has scale.consumed; then
    NOTES+=("- scale: consumers read ${R[scale.consumed]} of ${R[scale.produced]} records, $(num "${R[scale.consume_mbps]}" 1) MB/s from the producers' start until the last record; group stable after $(num "${R[scale.group_s]}" 1) s; creating the topics took $(num "${R[scale.create_s]}" 1) s; broker RSS with the topics and no load $(awk -v k="${R[scale.topics_rss_kib]}" 'BEGIN { printf "%.0f", k / 1024 }') MiB, 1 s after the load $(awk -v k="${R[scale.after_rss_kib]:-0}" 'BEGIN { printf "%.0f", k / 1024 }') MiB")
fi
if has restart.kill_s; then
    NOTES+=("- restart: $(awk -v k="${R[restart.data_kib]}" 'BEGIN { printf "%.1f", k / 2^20 }') GiB on disk; clean shutdown took $(num "${R[restart.shutdown_s]:-0}" 2) s (exit status ${R[restart.shutdown_status]:-?}); records held after SIGKILL ${R[restart.kill_records]:-?}, after SIGTERM ${R[restart.term_records]:-?} of $(( ${R[restart.bytes]} / MSG_SIZE ))")
fi
if has latency.produce.max; then
    NOTES+=("- latency: produce ack max $(num "${R[latency.produce.max]}" 2) ms, end-to-end max $(num "${R[latency.e2e.max]:-0}" 2) ms")
fi
if selected peer && [[ -n "$PEER_MBPS" ]]; then
    NOTES+=("- peer: ${R[peer.version]:-Tansu} with memory storage, same producer command as target 1 (\"ratio to peer\" = Vltava / Tansu): $(num "$PEER_MBPS" 1) MB/s")
fi

REV="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=""
if [[ -n "$(git -C "$REPO_DIR" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    DIRTY=" (+ uncommitted changes)"
fi
if [[ -n "${BENCH_VLTAVA:-}" ]]; then DIRTY+=" (binary: $VLTAVA)"; fi
NOW="$(date -u)"
SETUP="Phases: ${PHASE_LIST[*]}. $MSG_SIZE B records; BENCH_COUNT=$BENCH_COUNT; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); rdkafka_performance $RDK_VERSION"

REPORT="$(
    echo "## $NOW — $REV$DIRTY"
    echo
    echo "$SETUP"
    echo
    echo "$TARGETS"
    echo
    echo "$MEASUREMENTS"
    # A phase with figures outside the targets (cluster) writes its own table to report.md.
    for p in "${PHASE_LIST[@]}"; do
        if [[ -s "$WORK_DIR/$p/report.md" ]]; then echo; cat "$WORK_DIR/$p/report.md"; fi
    done
    if [[ ${#NOTES[@]} -gt 0 ]]; then echo; printf '%s\n' "${NOTES[@]}"; fi
)"

echo
echo "$REPORT"
echo

if [[ $RECORD -eq 1 ]]; then
    RESULTS="$BENCH_DIR/RESULTS.md"
    if [[ ! -f "$RESULTS" ]]; then
        # shellcheck disable=SC2016  # backquotes are Markdown here
    printf '# Benchmark results\n\nAppended by `bench/run.sh`; newest last. See README.md for how to read them.\n' >"$RESULTS"
    fi
    { echo; echo "$REPORT"; } >>"$RESULTS"
    log "appended to $RESULTS"
fi
[[ $ANY_FAILED -eq 0 ]] || { log "some phases failed (see the notes under the tables)"; exit 1; }
