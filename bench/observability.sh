#!/usr/bin/env bash
# What watching the cluster costs (release build, one run, side by side):
#   s  GET /metrics latency (median, p99 of 50 scrapes), empty vs BIG held jobs
#   w  controller CPU (share of one core) over SECS seconds of a steady job
#      stream (1 job/s) with BIG jobs queued: without, then with the web
#      dashboard open in headless Chromium (live over the event stream)
# Usage: bench/observability.sh      Env: BIG=10000 SECS=60
# Traffic stays on 127.0.0.1; the cluster and the browser are stopped on exit.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIG=${BIG:-10000}
SECS=${SECS:-60}
. "$ROOT/bench/lib.sh"

build_drover
WORK=$(mktemp -d /tmp/drover-bench.XXXXXX)
PORT=$((10000 + $$ % 20000))
export DROVER_CONTROLLER=127.0.0.1:$PORT
BROWSER=
cleanup() { [[ -n $BROWSER ]] && kill "$BROWSER" 2>/dev/null; (cd "$WORK" && "$DROVER" down >/dev/null 2>&1); rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK" || exit 1
"$DROVER" up --detach --nodes 2 --cpus-per-node 4 --mem-per-node 2G --port "$PORT" >/dev/null || exit 1
CTL=$(awk '$1=="controller"{print $2}' .drover/pids)

scrape_ms() { # quantile Q of 50 scrapes, ms
    for ((k = 0; k < 50; k++)); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT/metrics"; done |
        awk '{printf "%.2f\n", $1*1000}' | quantile "$1"
}
ticks() { awk '{print $14 + $15}' "/proc/$CTL/stat"; }
# stream: one trivial job a second for SECS seconds; prints the controller's
# CPU over that time as a share of one core.
stream() {
    local c0 t0 c1 t1
    c0=$(ticks); t0=$(now)
    for ((k = 0; k < SECS; k++)); do "$DROVER" submit -Q -o /dev/null --wrap=true; sleep 1; done
    c1=$(ticks); t1=$(now)
    awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v d="$(elapsed "$t0" "$t1")" 'BEGIN{printf "%.2f", 100*t/hz/d}'
}

echo "== scrape, empty cluster"
s_empty50=$(scrape_ms 0.5); s_empty99=$(scrape_ms 0.99)
echo "== queueing $BIG held jobs (one API request)"
"$DROVER" check --json -H --wrap=true > spec.json
python3 - "$BIG" "$PORT" <<'PY' || exit 1
import json, socket, sys, http.client
n, port = int(sys.argv[1]), int(sys.argv[2])
spec = json.load(open("spec.json")); spec["environment"] = [["PATH", "/usr/bin:/bin"]]
s = socket.socket(socket.AF_UNIX); s.connect(".drover/auth.sock"); cred = s.recv(4096).decode().strip()
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/api/v1/jobs", json.dumps({"jobs": [spec] * n}), {"Content-Type": "application/json", "Authorization": "Drover " + cred})
r = c.getresponse(); r.read(); sys.exit(r.status != 200)
PY
echo "== scrape with $BIG jobs queued"
s_big50=$(scrape_ms 0.5); s_big99=$(scrape_ms 0.99)
bytes=$(curl -s "http://127.0.0.1:$PORT/metrics" | wc -c)

echo "== controller CPU, job stream, no dashboard ($SECS s)"
w_without=$(stream)
echo "== controller CPU, job stream, dashboard open ($SECS s)"
LINK=$("$DROVER" dashboard --lifetime 1h)
chromium --headless=new --no-sandbox --disable-gpu --no-first-run --user-data-dir="$WORK/chromium" \
    --remote-debugging-port=0 "$LINK" >/dev/null 2>&1 &
BROWSER=$!
sleep 5
# The dashboard's list fetches, counted by the controller itself.
fetches() { curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^drover_http_request_seconds_count\{/ && /route="\/api\/v1\/jobs"/ && /method="GET"/ {n+=$2} END{print n+0}'; }
f0=$(fetches)
w_with=$(stream)
f1=$(fetches)

echo
echo "| figure | value |"
echo "|---|---|"
echo "| s. GET /metrics, empty cluster (ms, median / p99) | $s_empty50 / $s_empty99 |"
echo "| s'. GET /metrics, $BIG jobs queued (ms, median / p99) | $s_big50 / $s_big99 ($bytes bytes) |"
echo "| w. controller CPU, 1 job/s, $BIG queued, no dashboard (% of a core) | $w_without |"
echo "| w'. the same with the dashboard open (% of a core) | $w_with ($((f1 - f0)) job-list fetches) |"
awk -v a="$w_without" -v b="$w_with" 'BEGIN{printf "| dashboard adds (points of a core) | %.2f |\n", b-a}'
