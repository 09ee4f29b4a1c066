#!/usr/bin/env bash
# Recovery after a node's agent dies, Drover next to Slurm on this machine.
#
# Drover: a 3-node `drover up` cluster with the default 10 s node timeout
# (NODE_TIMEOUT to change it). Each of TRIALS trials submits a long job,
# waits until its first attempt runs, kills that node's agent with -9, and
# measures
#   detection        kill -> node DOWN (the controller's event time)
#   requeue->running node DOWN -> the requeued attempt's first command runs
# then cancels the job and brings the agent back.
#
# Slurm (SLURM=1, the default, if ../shared/peers/slurm exists): one trial
# on the peer (slurmd of the job's node killed with -9), same two figures.
# The peer sets SlurmdTimeout=60; Slurm's documented default is 300 s
# (slurm.conf(5)). One trial, because each costs minutes.
#
# Usage: bench/recovery.sh           TRIALS=10 NODE_TIMEOUT=10 SLURM=1
# Traffic stays on 127.0.0.1; every wait is bounded; clusters are stopped on exit.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRIALS=${TRIALS:-10}
NODE_TIMEOUT=${NODE_TIMEOUT:-10}
SLURM=${SLURM:-1}
PEER="$ROOT/../shared/peers/slurm"

. "$ROOT/bench/lib.sh"
sub() { elapsed "$1" "$2" 2; }
stats() { local v; v=$(cat); [[ -z $v ]] && { echo "NA NA"; return; }; echo "$(median <<<"$v") $(quantile 1 <<<"$v")"; }

build_drover
WORK=$(mktemp -d /tmp/drover-recovery.XXXXXX)
PORT=$((10000 + $$ % 20000))
export DROVER_CONTROLLER=127.0.0.1:$PORT
# Without the healer: this measures detection and requeue (bench/healing.sh
# measures the healer).
UP=(up --detach --nodes 3 --cpus-per-node 2 --mem-per-node 1G --port "$PORT" --node-timeout "$NODE_TIMEOUT" --heal none)
cleanup() { (cd "$WORK" && "$DROVER" down >/dev/null 2>&1); rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK" || exit 1
"$DROVER" "${UP[@]}" >/dev/null || exit 1

field() { "$DROVER" show job "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
wait_for() { # seconds, command...: poll every 20 ms
    local limit=$1 i=0; shift
    while ! "$@"; do ((i++ < limit * 50)) || return 1; sleep 0.02; done
}
started() { [[ -s "$1" ]] && grep -q "^start $2 " "$1"; }

det=() req=()
for ((t = 1; t <= TRIALS; t++)); do
    out="$WORK/job$t.out"
    id=$("$DROVER" submit --parsable -o "$out" --open-mode=append \
        --wrap 'echo start $SLURM_RESTART_COUNT $(date +%s.%N); sleep 600')
    wait_for 20 started "$out" 0 || { echo "trial $t: job did not start"; continue; }
    node=$(field "$id" nodes)
    after=$("$DROVER" events --json | tail -1 | python3 -c "import json,sys; print(json.load(sys.stdin)['seq'])")
    t0=$(now)
    "$DROVER" chaos kill-agent "$node" >/dev/null
    wait_for $((NODE_TIMEOUT + 10)) started "$out" 1 || { echo "trial $t: no requeued attempt"; continue; }
    down=$("$DROVER" events --json --kind NodeStateChanged | python3 -c "
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    if e['seq'] > $after and e['node'] == '$node' and '-> DOWN' in e['text']:
        print(e['time_ms'] / 1000); break")
    run=$(awk '$1 == "start" && $2 == 1 {print $3; exit}' "$out")
    det+=("$(sub "$t0" "$down")")
    req+=("$(sub "$down" "$run")")
    echo "trial $t: $node down after ${det[-1]} s, requeued attempt running ${req[-1]} s later"
    "$DROVER" cancel "$id" >/dev/null
    "$DROVER" "${UP[@]}" >/dev/null || exit 1
done
read -r D50 DMAX < <(printf '%s\n' "${det[@]}" | stats)
read -r R50 RMAX < <(printf '%s\n' "${req[@]}" | stats)
"$DROVER" down >/dev/null 2>&1

S_DET="" S_REQ=""
if [[ "$SLURM" == 1 && -x "$PEER/start.sh" ]]; then
    echo "== slurm: one trial on the peer (SlurmdTimeout=60 there)"
    if "$PEER/start.sh" >/tmp/drover-recovery-slurm.log 2>&1; then
        # shellcheck disable=SC1091
        (cd "$PEER" && . ./env.sh && cd "$WORK" && {
            id=$(sbatch --parsable --requeue -o "$WORK/slurm.out" --open-mode=append \
                --wrap 'echo start $SLURM_RESTART_COUNT $(date +%s.%N); sleep 600')
            # Slurm leaves SLURM_RESTART_COUNT unset on the first attempt.
            i=0; until grep -Eq '^start (0)? ' "$WORK/slurm.out" 2>/dev/null; do ((i++ < 3000)) || break; sleep 0.02; done
            node=$(squeue -h -j "$id" -o %N)
            t0=$(now)
            kill -9 "$(cat "$SLURM_PEER_RUN/slurmd-$node.pid")"
            i=0; until sinfo -h -n "$node" -o %t | grep -q down; do ((i++ < 600)) || break; sleep 0.5; done
            t1=$(now)
            i=0; until grep -q '^start 1 ' "$WORK/slurm.out" 2>/dev/null; do ((i++ < 600)) || break; sleep 0.5; done
            run=$(awk '$1 == "start" && $2 == 1 {print $3; exit}' "$WORK/slurm.out")
            echo "$(sub "$t0" "$t1") ${run:+$(sub "$t1" "$run")}" >"$WORK/slurm.res"
            scancel "$id"
            # The first attempt's slurmstepd outlived its killed slurmd
            # (Slurm does not fence it): stop it by hand.
            pkill -9 -f "slurmstepd: \\[$id\\." ; pkill -9 -f "job$id/slurm_script"
        })
        read -r S_DET S_REQ <"$WORK/slurm.res" 2>/dev/null
        "$PEER/stop.sh" >/dev/null 2>&1
    else
        echo "slurm peer did not start; see /tmp/drover-recovery-slurm.log"
    fi
fi

echo
echo "| figure | Drover (node_timeout ${NODE_TIMEOUT} s, $TRIALS trials) | Slurm 22.05 peer (SlurmdTimeout 60 s, 1 trial) |"
echo "|---|---|---|"
echo "| detection: agent killed -> node DOWN (s), p50 / max | $D50 / $DMAX | ${S_DET:-n/a} (documented default SlurmdTimeout: 300 s) |"
echo "| requeue -> running: node DOWN -> requeued job's first command (s), p50 / max | $R50 / $RMAX | ${S_REQ:-n/a} |"
