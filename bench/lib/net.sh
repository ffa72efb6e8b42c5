# shellcheck shell=bash
# Port helpers shared by bench/run.sh and the phase scripts (sourced, never run); the caller
# defines die().

# free_port: a port the kernel considers free right now (small race until the server binds it).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return 0
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
    done
    die "no free port found"
}

# wait_for_port PORT PID SECS: until something listens on 127.0.0.1:PORT, judged by ss (no probe
# connection, which a one-shot iperf3 server would take for its client); fails early when PID
# exits.
wait_for_port() {
    local port=$1 pid=$2 secs=$3 i
    for ((i = 0; i < secs * 50; i++)); do
        if ss -Htln "sport = :$port" | grep -q .; then return 0; fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.02
    done
    return 1
}
