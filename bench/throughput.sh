#!/usr/bin/env bash
# Side-by-side throughput: Drover and real Slurm on this machine, same shape
# (2 nodes x 4 CPUs, trivial jobs), same figures:
#   a  CLI submit rate: N one-call-each `submit --wrap=true`              jobs/s
#   b  end to end: first submit of (a) until all N jobs are done          jobs/s
#   c  an ARRAY-task array (`--wrap=true`), submit until all tasks done   tasks/s
#   d  queue listing latency with HELD held jobs (median of 20 calls)     ms
#   e  idle submit -> the job's first command runs (median, p99)          ms
#      (and e': the part after the submit's answer, i.e. without the CLI)
# plus Drover-only: a 10 000-task array and listing with 10 000 jobs, and
# the CPU Drover's daemons use while (b) runs.
#
# Usage: bench/throughput.sh            Drover, then Slurm (if ../shared/peers/slurm exists)
#        SLURM=0 bench/throughput.sh    Drover only
# Env: N=500 ARRAY=1000 HELD=1000 LAT_REPS=20 BIG=10000
# Traffic stays on 127.0.0.1; every loop is bounded; clusters are stopped on exit.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=${N:-500}
ARRAY=${ARRAY:-1000}
HELD=${HELD:-1000}
LAT_REPS=${LAT_REPS:-20}
BIG=${BIG:-10000}
SLURM=${SLURM:-1}
PEER="$ROOT/../shared/peers/slurm"

. "$ROOT/bench/lib.sh"
declare -A D S

build_drover
WORK=$(mktemp -d /tmp/drover-bench.XXXXXX)
PORT=$((10000 + $$ % 20000))  # below the ephemeral port range
export DROVER_CONTROLLER=127.0.0.1:$PORT
cleanup() { (cd "$WORK" && "$DROVER" down >/dev/null 2>&1); rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK" || exit 1
"$DROVER" up --detach --nodes 2 --cpus-per-node 4 --mem-per-node 2G --port "$PORT" >/dev/null || exit 1

cpu_ticks() { # utime+stime of Drover's daemons, in clock ticks
    local t=0 pid
    for pid in $(awk '{print $2}' .drover/pids); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

echo "== drover: a + b ($N jobs)"
# Ids go to a file (as Slurm's bench runs `sbatch -Q`, no subshell per call).
c0=$(cpu_ticks); t0=$(now)
for ((i = 0; i < N; i++)); do "$DROVER" submit --parsable -o /dev/null --wrap=true >>ids; done
t1=$(now)
mapfile -t ids <ids
"$DROVER" wait "${ids[@]}" >/dev/null
t2=$(now); c1=$(cpu_ticks)
D[a]=$(rate "$N" "$(elapsed "$t0" "$t1")")
D[b]=$(rate "$N" "$(elapsed "$t0" "$t2")")
D[cpu]=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v d="$(elapsed "$t0" "$t2")" -v n="$(nproc)" 'BEGIN{printf "%.0f", 100*t/hz/d/n}')

echo "== drover: c ($ARRAY-task array, and $BIG)"
t0=$(now); id=$("$DROVER" submit --parsable -o /dev/null --array=1-"$ARRAY" --wrap=true); "$DROVER" wait "$id" >/dev/null; t1=$(now)
D[c]=$(rate "$ARRAY" "$(elapsed "$t0" "$t1")")
t0=$(now); id=$("$DROVER" submit --parsable -o /dev/null --array=1-"$BIG" --wrap=true); "$DROVER" wait "$id" >/dev/null; t1=$(now)
D[cbig]=$(rate "$BIG" "$(elapsed "$t0" "$t1")")

queue_ms() { local lat=() k t0 t1; for ((k = 0; k < 20; k++)); do t0=$(now); "$DROVER" queue >/dev/null; t1=$(now); lat+=("$(awk -v d="$(elapsed "$t0" "$t1")" 'BEGIN{printf "%.1f", d*1000}')"); done; printf '%s\n' "${lat[@]}" | median; }
echo "== drover: d (queue with $HELD held jobs, then $BIG)"
for ((i = 0; i < HELD; i++)); do "$DROVER" submit -Q -H -o /dev/null --wrap=true; done
D[d]=$(queue_ms)
# Individual jobs (a pending array lists as one line, as in squeue).
for ((i = HELD; i < BIG; i++)); do "$DROVER" submit -Q -H -o /dev/null --wrap=true; done
D[dbig]=$(queue_ms)
"$DROVER" cancel --state PENDING >/dev/null 2>&1

echo "== drover: e (idle submit -> first command, $LAT_REPS probes)"
lat=() after=()
for ((k = 0; k < LAT_REPS; k++)); do
    f="$WORK/lat.$k"
    t0=$(now)
    "$DROVER" submit -Q -o /dev/null --wrap="date +%s.%N > $f.tmp; mv $f.tmp $f"
    ta=$(now)
    w=0
    while [[ ! -s $f ]] && ((w++ < 1000)); do sleep 0.005; done
    [[ -s $f ]] && lat+=("$(awk -v a="$t0" -v b="$(cat "$f")" 'BEGIN{printf "%.1f", (b-a)*1000}')")
    [[ -s $f ]] && after+=("$(awk -v a="$ta" -v b="$(cat "$f")" 'BEGIN{printf "%.1f", (b-a)*1000}')")
    sleep 0.2
done
D[e]=$(printf '%s\n' "${lat[@]}" | median)
D[e99]=$(printf '%s\n' "${lat[@]}" | p99)
# From the submit's answer (the job is durable) to its first command.
D[eack]=$(printf '%s\n' "${after[@]}" | median)
echo "== drover: f (one API request of $BIG held jobs)"
"$DROVER" check --json -H --wrap=true > spec.json
D[f]=$(python3 - "$BIG" "$PORT" <<'PY'
import json, socket, sys, time, http.client
n, port = int(sys.argv[1]), int(sys.argv[2])
spec = json.load(open("spec.json")); spec["environment"] = [["PATH", "/usr/bin:/bin"]]
body = json.dumps({"jobs": [spec] * n})
s = socket.socket(socket.AF_UNIX); s.connect(".drover/auth.sock"); cred = s.recv(4096).decode().strip()
c = http.client.HTTPConnection("127.0.0.1", port); t = time.time()
c.request("POST", "/api/v1/jobs", body, {"Content-Type": "application/json", "Authorization": "Drover " + cred})
r = c.getresponse(); r.read(); d = time.time() - t
print(f"{n / d:.0f}" if r.status == 200 else "failed")
PY
)
"$DROVER" down >/dev/null 2>&1

if [[ "$SLURM" == 1 && -x "$PEER/start.sh" ]]; then
    echo "== slurm: starting the peer (../shared/peers/slurm)"
    "$PEER/start.sh" >/tmp/drover-bench-slurm-start.log 2>&1 || { echo "slurm peer did not start; see /tmp/drover-bench-slurm-start.log"; SLURM=0; }
fi
if [[ "$SLURM" == 1 ]]; then
    echo "== slurm: bench.sh (same N, ARRAY, HELD; 10 latency probes 10 s apart, its own method)"
    out=$(N=$N ARRAY=$ARRAY HELD=$HELD LAT_REPS=10 "$PEER/bench.sh" 1 2>&1)
    get() { echo "$out" | awk -v f="$1" '$2==f {print $3; exit}'; }
    S[a]=$(get a_sbatch_rate); S[b]=$(get b_e2e_rate); S[c]=$(get c_array_rate)
    S[d]=$(get d_squeue_ms); S[e]=$(get e_start_latency_ms)
    "$PEER/stop.sh" >/dev/null 2>&1
fi

ratio() { awk -v d="$1" -v s="$2" -v hi="$3" 'BEGIN{ if (d==""||s==""||d=="NA"||s=="NA"||d==0||s==0) {print "-"} else if (hi) {printf "%.1fx", d/s} else {printf "%.1fx", s/d} }'; }
echo
echo "| figure | Drover | Slurm 22.05 | Drover vs Slurm |"
echo "|---|---|---|---|"
echo "| a. CLI submit, $N one call each (jobs/s) | ${D[a]} | ${S[a]:-n/a} | $(ratio "${D[a]}" "${S[a]:-}" 1) |"
echo "| b. end to end, $N trivial jobs on 2 nodes (jobs/s) | ${D[b]} | ${S[b]:-n/a} | $(ratio "${D[b]}" "${S[b]:-}" 1) |"
echo "| c. $ARRAY-task array end to end (tasks/s) | ${D[c]} | ${S[c]:-n/a} | $(ratio "${D[c]}" "${S[c]:-}" 1) |"
echo "| d. queue listing, $HELD pending (ms, median) | ${D[d]} | ${S[d]:-n/a} | $(ratio "${D[d]}" "${S[d]:-}" 0) |"
echo "| e. idle submit -> start (ms, median) | ${D[e]} (p99 ${D[e99]}) | ${S[e]:-n/a} | $(ratio "${D[e]}" "${S[e]:-}" 0) |"
echo "| e'. of which after the submit returned (ms, median) | ${D[eack]} | | |"
echo "| c'. $BIG-task array end to end (tasks/s) | ${D[cbig]} | (MaxArraySize 1001) | |"
echo "| d'. queue listing, $BIG pending (ms, median) | ${D[dbig]} | | |"
echo "| f. one API request of $BIG jobs (jobs/s accepted) | ${D[f]} | | |"
echo "| Drover daemons' CPU during (b), share of the machine | ${D[cpu]}% | | |"
