# shellcheck shell=bash disable=SC2034  # variables set here are read by the phase scripts
# Three (NODES) combined nodes (broker + controller voter) on 127.0.0.1 for the cluster phases
# (sourced after common.sh, never run). Sets NODE_PORT, NODE_CPORT, NODE_DATA, VOTERS, ALL_ADDRS,
# ALL_IDS; NODE_PID and NODE_LOG follow each start. NODE_EXTRA_ARGS (an array the phase may set
# before launching) is passed to every `vltava serve`.

declare -A NODE_PID=() NODE_PORT=() NODE_CPORT=() NODE_DATA=() NODE_STARTS=() NODE_LOG=()
NODE_EXTRA_ARGS=()
VOTERS=""
for ((i = 1; i <= NODES; i++)); do
    NODE_PORT[$i]="$(free_port)"
    NODE_CPORT[$i]="$(free_port)"
    NODE_DATA[$i]="$PHASE_DIR/cluster/node$i"
    NODE_STARTS[$i]=0
    NODE_PID[$i]=""
    VOTERS+="${VOTERS:+,}$i@127.0.0.1:${NODE_CPORT[$i]}"
done
ALL_ADDRS="$(for ((i = 1; i <= NODES; i++)); do printf '%s127.0.0.1:%s' "$([[ $i -gt 1 ]] && echo ,)" "${NODE_PORT[$i]}"; done)"
ALL_IDS="$(seq -s, 1 "$NODES")"
addr() { echo "127.0.0.1:${NODE_PORT[$1]}"; }
# addrs I J ...: the addresses of those nodes, comma-separated.
addrs() { local i out=""; for i in "$@"; do out+="${out:+,}$(addr "$i")"; done; echo "$out"; }

# launch_node I: starts node I on its data dir (kept across restarts), returns at once. RUST_LOG
# is unset so that the default filter (info) logs "this node is the active controller".
launch_node() {
    local i=$1
    mkdir -p "${NODE_DATA[$i]}"
    NODE_STARTS[$i]=$((NODE_STARTS[$i] + 1))
    NODE_LOG[$i]="$PHASE_DIR/node$i-${NODE_STARTS[$i]}.stderr"
    env -u RUST_LOG "$VLTAVA" serve --node-id "$i" --listen "$(addr "$i")" \
        --controller-listen "127.0.0.1:${NODE_CPORT[$i]}" --controller-quorum-voters "$VOTERS" \
        --data-dir "${NODE_DATA[$i]}" --set auto.create.topics.enable=false "${NODE_EXTRA_ARGS[@]}" \
        </dev/null >"$PHASE_DIR/node$i-${NODE_STARTS[$i]}.stdout" 2>"${NODE_LOG[$i]}" &
    NODE_PID[$i]=$!
    track "$!"
}
wait_node() {
    local i=$1
    wait_for_port "${NODE_PORT[$i]}" "${NODE_PID[$i]}" 90 \
        || { tail -20 "${NODE_LOG[$i]}" >&2; die "node $i did not listen on $(addr "$i") within 90 s (log: ${NODE_LOG[$i]})"; }
}
node_alive() { [[ -n "${NODE_PID[$1]}" ]] && kill -0 "${NODE_PID[$1]}" 2>/dev/null; }
check_nodes() {
    local i
    for ((i = 1; i <= NODES; i++)); do
        node_alive "$i" || die "node $i died during $1 (log: ${NODE_LOG[$i]})"
    done
}
# kill_nodes: SIGKILL of every running node (cleanup: a clean stop of the last voters would wait
# for a quorum already gone, and the data is thrown away anyway).
kill_nodes() {
    local i
    for i in "${!NODE_PID[@]}"; do
        [[ -n "${NODE_PID[$i]}" ]] && kill -KILL "${NODE_PID[$i]}" 2>/dev/null || true
    done
}
# active_controller: "NODE TERM" of the highest term any node's stderr (all starts) announced.
active_controller() {
    cat "$PHASE_DIR"/node*-*.stderr 2>/dev/null \
        | sed -n 's/.*this node is the active controller node=\([0-9]*\) term=\([0-9]*\).*/\2 \1/p' \
        | sort -n | tail -1 | awk '{ print $2, $1 }'
}
