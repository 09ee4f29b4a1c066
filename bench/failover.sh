#!/usr/bin/env bash
# Controller failover and the cost of replication.
#
# 1. Steady-state submit rate: N sequential `drover submit` calls (and the
#    same from 4 parallel clients) against a 1-controller and a 3-controller
#    `drover up`, side by side in this run.
# 2. Failover: a 3-controller cluster, a client submitting in a loop, and
#    KILLS times: `drover chaos kill-controller` (the leader, SIGKILL), wait,
#    bring it back with `drover up`. Failover time = last acknowledged
#    submit before the kill -> first acknowledged submit after it, as the
#    client saw it. Then HANGS times the same with the leader SIGSTOPped
#    for 4 s.
#
# Usage: bench/failover.sh           N=300 KILLS=10 HANGS=5
# Traffic stays on 127.0.0.1; clusters are stopped on exit.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=${N:-300}
KILLS=${KILLS:-10}
HANGS=${HANGS:-5}
. "$ROOT/bench/lib.sh"

build_drover
WORK=$(mktemp -d /tmp/drover-failover.XXXXXX)
PORT=$((10000 + $$ % 20000))
WRITER=
cleanup() {
    [[ -n $WRITER ]] && kill "$WRITER" 2>/dev/null
    for d in "$WORK"/c1 "$WORK"/c3; do [[ -d $d ]] && (cd "$d" && "$DROVER" down >/dev/null 2>&1); done
    rm -rf "$WORK"
}
trap cleanup EXIT

up() { # up DIR CONTROLLERS
    mkdir -p "$1" && (cd "$1" && "$DROVER" up --detach --nodes 2 --cpus-per-node 2 --mem-per-node 1G \
        --port "$PORT" --controllers "$2" >/dev/null) || exit 1
}

sequential() { # sequential DIR: submits/s
    local t0 t1
    t0=$(now)
    for _ in $(seq "$N"); do (cd "$1" && "$DROVER" submit --hold --wrap true >/dev/null) || echo fail >&2; done
    t1=$(now)
    rate "$N" "$(elapsed "$t0" "$t1")"
}

parallel() { # parallel DIR: submits/s with 4 clients
    local t0 t1
    t0=$(now)
    for _ in 1 2 3 4; do
        (cd "$1" && for _ in $(seq $((N / 4))); do "$DROVER" submit --hold --wrap true >/dev/null; done) &
    done
    wait
    t1=$(now)
    rate "$N" "$(elapsed "$t0" "$t1")"
}

echo "== steady state: $N submits"
up "$WORK/c1" 1
one_seq=$(sequential "$WORK/c1"); one_par=$(parallel "$WORK/c1")
(cd "$WORK/c1" && "$DROVER" down >/dev/null)
up "$WORK/c3" 3
three_seq=$(sequential "$WORK/c3"); three_par=$(parallel "$WORK/c3")
printf '%-28s %10s %10s %8s\n' "" "1 ctl" "3 ctl" "3/1"
printf '%-28s %10s %10s %8s\n' "sequential submits/s" "$one_seq" "$three_seq" \
    "$(awk -v a="$three_seq" -v b="$one_seq" 'BEGIN{printf "%.2f", a/b}')"
printf '%-28s %10s %10s %8s\n' "4 parallel clients submits/s" "$one_par" "$three_par" \
    "$(awk -v a="$three_par" -v b="$one_par" 'BEGIN{printf "%.2f", a/b}')"

# The writer: one line per acknowledged submit, its time.
LOG="$WORK/writes"
(cd "$WORK/c3" && while :; do
    "$DROVER" submit --hold --wrap true >/dev/null 2>&1 && now
done) >"$LOG" &
WRITER=$!

gap_after() { # gap_after T: the longest time between two acknowledged writes around the fault at T
    awk -v t="$1" '$1 >= t - 1 && $1 <= t + 8 { if (p && $1 - p > g) g = $1 - p; p = $1 } END{if (g) printf "%.3f\n", g; else print "NA"}' "$LOG"
}

fault() { # fault kill|hang: one fault, prints the gap
    sleep 2
    local t
    t=$(now)
    if [[ $1 == kill ]]; then
        (cd "$WORK/c3" && "$DROVER" chaos kill-controller >/dev/null)
        sleep 3
        up "$WORK/c3" 3
    else
        (cd "$WORK/c3" && "$DROVER" chaos hang-controller --for 4 >/dev/null)
    fi
    sleep 2
    gap_after "$t"
}

echo "== failover: $KILLS leader kills (SIGKILL), $HANGS leader hangs (SIGSTOP 4 s)"
kills=(); hangs=()
for i in $(seq "$KILLS"); do kills+=("$(fault kill)"); echo "kill $i: ${kills[-1]} s"; done
for i in $(seq "$HANGS"); do hangs+=("$(fault hang)"); echo "hang $i: ${hangs[-1]} s"; done
kill "$WRITER"; WRITER=
printf '%s\n' "${kills[@]}" | grep -v NA >"$WORK/k"
printf '%s\n' "${hangs[@]}" | grep -v NA >"$WORK/h"
echo "failover after kill -9: p50 $(median <"$WORK/k") s, max $(quantile 1 <"$WORK/k") s ($KILLS kills)"
echo "failover after SIGSTOP: p50 $(median <"$WORK/h") s, max $(quantile 1 <"$WORK/h") s ($HANGS hangs)"
echo "writes acknowledged meanwhile: $(wc -l <"$LOG")"
