#!/usr/bin/env bash
# Job listings with a big queue, two drover binaries side by side,
# alternated round by round (this host is noisy):
#   - GET /api/v1/jobs?all=true (the JSON views squeue --json and the
#     dashboard's detail read), median of 20;
#   - the same with detail=true (scontrol show job: output paths too);
#   - `scontrol show job` itself, all jobs, median of 5.
#
#   bench/listing.sh OLD_DROVER NEW_DROVER [JOBS] [ROUNDS]
#
# Each round starts a fresh one-node cluster per binary on a private port,
# queues JOBS held jobs in one request, measures, and stops it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
A=$(realpath "$1"); B=$(realpath "$2"); JOBS=${3:-10000}; ROUNDS=${4:-3}
PORT=$((30000 + $$ % 2000))

measure() { # BINARY -> "json_ms detail_ms scontrol_ms"
    local bin=$1 work
    work=$(mktemp -d /tmp/drover-bench-listing.XXXXXX)
    (
        cd "$work" || exit 1
        "$bin" up --detach --nodes 1 --cpus-per-node 4 --mem-per-node 2G --port "$PORT" >/dev/null || exit 1
        "$bin" install-links "$work/bin" >/dev/null
        "$bin" check --json -H -d singleton --wrap=true > spec.json
        python3 - "$JOBS" "$PORT" <<'PY' || exit 1
import json, socket, sys, time, http.client, statistics
n, port = int(sys.argv[1]), int(sys.argv[2])
spec = json.load(open("spec.json")); spec["environment"] = [["PATH", "/usr/bin:/bin"]]
def cred():
    s = socket.socket(socket.AF_UNIX); s.connect(".drover/auth.sock"); c = s.recv(4096).decode().strip(); s.close(); return c
def get(path):
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", path, headers={"Authorization": "Drover " + cred()})
    r = c.getresponse(); body = r.read(); assert r.status == 200, (r.status, body[:200]); return body
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/api/v1/jobs", json.dumps({"jobs": [spec] * n}), {"Content-Type": "application/json", "Authorization": "Drover " + cred()})
r = c.getresponse(); r.read(); assert r.status == 200
def median_ms(path, k=20):
    times = []
    for _ in range(k):
        t = time.perf_counter(); get(path); times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
print(f"{median_ms('/api/v1/jobs?all=true'):.1f} {median_ms('/api/v1/jobs?all=true&detail=true'):.1f}", end=" ")
PY
        for ((k = 0; k < 5; k++)); do
            t0=$(now); "$work/bin/scontrol" show job >/dev/null; t1=$(now)
            elapsed "$t0" "$t1" 4; echo
        done | awk '{printf "%.1f\n", $1*1000}' | median
        "$bin" down >/dev/null
    )
    rm -rf "$work"
}

echo "| round | binary | GET /jobs ms | GET /jobs?detail ms | scontrol show job ms |"
echo "|---|---|---|---|---|"
for ((r = 1; r <= ROUNDS; r++)); do
    for which in A B; do
        bin=$A; [[ $which == B ]] && bin=$B
        read -r json detail sc < <(measure "$bin")
        echo "| $r | $which | $json | $detail | $sc |"
    done
done
