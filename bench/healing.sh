#!/usr/bin/env bash
# Time from a failure to capacity restored, for each provider of the healer,
# and the floating IP's move after a leader kill.
#
#   local     `drover up` (local provider): an agent killed with -9 ->
#             the repair started (the healer's reaction) -> the node back
#             (registered: RepairDone), TRIALS times.
#   aws-ec2   against moto's server on loopback (it boots instances at
#             once, so what is measured is the healer's own share): an
#             instance stopped -> node DOWN and the repair started -> node
#             back, TRIALS times; an instance "boots" when
#             tests/fixtures/ec2_cloud.py starts its agent.
#   floating  3 controllers with --ec2-floating-ip: the leader killed with
#             -9 -> the new leader's election -> the IP assigned to its
#             interface and the route moved (the EC2 calls' time, from its
#             log), TRIALS times.
#
# Usage: bench/healing.sh            TRIALS=5 POLL=2 (the healer's poll, s)
# Traffic stays on 127.0.0.1; every wait is bounded; clusters are stopped on exit.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRIALS=${TRIALS:-5}
POLL=${POLL:-2}
CLOUD="$ROOT/tests/fixtures/ec2_cloud.py"
. "$ROOT/bench/lib.sh"
stats() { local v; v=$(cat); [[ -z $v ]] && { echo "NA NA"; return; }; echo "$(median <<<"$v") $(quantile 1 <<<"$v")"; }
build_drover
WORK=$(mktemp -d /tmp/drover-healing.XXXXXX)
PORT=$((10000 + $$ % 20000))
MOTO_PORT=$((PORT + 10))
MOTO_PID=""
cleanup() {
    for d in "$WORK"/*/; do (cd "$d" && "$DROVER" down >/dev/null 2>&1); done
    touch "$WORK/ec2/cloud.stop" 2>/dev/null
    [[ -n $MOTO_PID ]] && kill "$MOTO_PID" 2>/dev/null
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

# The time (s since the epoch) of the first event after SEQ whose text has TEXT.
event_at() { # after text
    "$DROVER" events --json | python3 -c "
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    if e['seq'] > $1 and '''$2''' in e['text']:
        print(e['time_ms'] / 1000); break"
}
last_seq() { "$DROVER" events --json | tail -1 | python3 -c "import json,sys; print(json.load(sys.stdin)['seq'])"; }
wait_event() { # after text seconds
    local i=0
    while [[ -z $(event_at "$1" "$2") ]]; do ((i++ < $3 * 10)) || return 1; sleep 0.1; done
}

# ---- local
mkdir -p "$WORK/local" && cd "$WORK/local" || exit 1
export DROVER_CONTROLLER=127.0.0.1:$PORT
"$DROVER" up --detach --nodes 2 --cpus-per-node 2 --mem-per-node 1G --port "$PORT" --heal-poll "$POLL" >/dev/null || exit 1
react=() back=()
for ((t = 1; t <= TRIALS; t++)); do
    after=$(last_seq)
    t0=$(now)
    "$DROVER" chaos kill-agent node1 >/dev/null
    wait_event "$after" "repair replace of node1 done" 20 || { echo "local trial $t: not repaired"; continue; }
    react+=("$(elapsed "$t0" "$(event_at "$after" "repair replace of node1 through")" 3)")
    back+=("$(elapsed "$t0" "$(event_at "$after" "repair replace of node1 done")" 3)")
    echo "local trial $t: repair started ${react[-1]} s after the kill, node back ${back[-1]} s"
    sleep 1
done
read -r LR50 LRMAX < <(printf '%s\n' "${react[@]}" | stats)
read -r LB50 LBMAX < <(printf '%s\n' "${back[@]}" | stats)
"$DROVER" down >/dev/null 2>&1

# ---- aws-ec2 and the floating IP, on moto
ER50=NA ERMAX=NA EB50=NA EBMAX=NA F50=NA FMAX=NA FK50=NA FKMAX=NA
if command -v moto_server >/dev/null; then
    moto_server -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$MOTO_PORT) 2>/dev/null && break; sleep 0.1; done
    export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
    python3 "$CLOUD" setup "$AWS_ENDPOINT_URL" bench node1,node2 0 >/dev/null
    mkdir -p "$WORK/ec2" && cd "$WORK/ec2" || exit 1
    "$DROVER" up --detach --nodes 2 --cpus-per-node 2 --mem-per-node 1G --port "$PORT" --heal-poll "$POLL" \
        --heal aws-ec2 --ec2-cluster bench --node-timeout 5 >/dev/null || exit 1
    python3 "$CLOUD" boot "$AWS_ENDPOINT_URL" bench "$WORK/ec2/.drover" "$DROVER" >/dev/null 2>&1 &
    react=() back=()
    for ((t = 1; t <= TRIALS; t++)); do
        after=$(last_seq)
        t0=$(now)
        python3 "$CLOUD" stop "$AWS_ENDPOINT_URL" bench node1 "$WORK/ec2/.drover" >/dev/null
        wait_event "$after" "repair replace of node1 done" 30 || { echo "ec2 trial $t: not repaired"; continue; }
        react+=("$(elapsed "$t0" "$(event_at "$after" "repair replace of node1 through")" 3)")
        back+=("$(elapsed "$t0" "$(event_at "$after" "repair replace of node1 done")" 3)")
        echo "aws-ec2 trial $t: repair started ${react[-1]} s after the stop, node back ${back[-1]} s"
        sleep 1
    done
    read -r ER50 ERMAX < <(printf '%s\n' "${react[@]}" | stats)
    read -r EB50 EBMAX < <(printf '%s\n' "${back[@]}" | stats)
    touch "$WORK/ec2/cloud.stop"
    "$DROVER" down >/dev/null 2>&1

    net=$(python3 "$CLOUD" vip-setup "$AWS_ENDPOINT_URL")
    map=$(python3 -c "import json,sys; e=json.loads(sys.argv[1])['enis']; print(','.join('%d=%s' % (i + 1, x) for i, x in enumerate(e)))" "$net")
    rtb=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['rtb'])" "$net")
    mkdir -p "$WORK/vip" && cd "$WORK/vip" || exit 1
    export DROVER_CONTROLLER=127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))
    "$DROVER" up --detach --controllers 3 --nodes 1 --cpus-per-node 2 --mem-per-node 1G --port "$PORT" --heal none \
        --ec2-floating-ip 10.0.0.100 --ec2-floating-ip-eni "$map" --ec2-route-table "$rtb" >/dev/null || exit 1
    calls=() killed=()
    for ((t = 1; t <= TRIALS; t++)); do
        t0=$(now)
        "$DROVER" chaos kill-controller >/dev/null || break
        # The new leader logs "… (acquire): … in N ms" once the IP moved.
        line=""
        for _ in $(seq 150); do
            line=$(grep -h "(acquire): " .drover/logs/controller*.log 2>/dev/null | python3 -c "
import sys, datetime
t0 = $t0
for l in sys.stdin:
    ts = datetime.datetime.strptime(l.split()[0][:23], '%Y-%m-%dT%H:%M:%S.%f').replace(tzinfo=datetime.timezone.utc).timestamp()
    if ts > t0:
        print(ts, l.split(' in ')[-1].split(' ms')[0]); break")
            [[ -n $line ]] && break
            sleep 0.1
        done
        [[ -z $line ]] && { echo "floating trial $t: the IP did not move"; continue; }
        killed+=("$(elapsed "$t0" "${line% *}" 3)")
        calls+=("$(awk -v ms="${line#* }" 'BEGIN{printf "%.3f", ms / 1000}')")
        echo "floating trial $t: IP and route on the new leader ${killed[-1]} s after the kill (EC2 calls ${calls[-1]} s after its election)"
        "$DROVER" up --detach --controllers 3 --nodes 1 --cpus-per-node 2 --mem-per-node 1G --port "$PORT" --heal none \
            --ec2-floating-ip 10.0.0.100 --ec2-floating-ip-eni "$map" --ec2-route-table "$rtb" >/dev/null || break
        sleep 2
    done
    read -r F50 FMAX < <(printf '%s\n' "${calls[@]}" | stats)
    read -r FK50 FKMAX < <(printf '%s\n' "${killed[@]}" | stats)
    "$DROVER" down >/dev/null 2>&1
fi

echo
echo "== healing, $TRIALS trials each, poll ${POLL}s (median / max, seconds)"
printf '%-52s %8s %8s\n' "figure" "median" "max"
printf '%-52s %8s %8s\n' "local: agent killed -> repair started" "$LR50" "$LRMAX"
printf '%-52s %8s %8s\n' "local: agent killed -> node back (registered)" "$LB50" "$LBMAX"
printf '%-52s %8s %8s\n' "aws-ec2 (moto): instance stopped -> repair started" "$ER50" "$ERMAX"
printf '%-52s %8s %8s\n' "aws-ec2 (moto): instance stopped -> node back" "$EB50" "$EBMAX"
printf '%-52s %8s %8s\n' "floating IP: leader kill -9 -> IP on the new leader" "$FK50" "$FKMAX"
printf '%-52s %8s %8s\n' "floating IP: election -> IP and route moved" "$F50" "$FMAX"
