#!/usr/bin/env bash
# Accounting (issue #8), on SQLite and on PostgreSQL (a throwaway server on
# loopback, .ci/postgres.sh):
#   write   records/s written in the writer's batches of 500, up to ROWS rows
#   history one user's last day over ROWS rows: median and worst of 20 queries (aim < 100 ms)
#   usage   a 30-day usage report over ROWS rows
# and with a running cluster, the CLI submit rate with accounting on
# (SQLite, the default) and off, alternated A/B/A/B (aim: on >= 95% of off).
#
# Usage: bench/accounting.sh      Env: ROWS=1000000 N=300 SQLITE=1 PG=1
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS=${ROWS:-1000000}
N=${N:-300}
PG=${PG:-1}
SQLITE=${SQLITE:-1}
. "$ROOT/bench/lib.sh"

build_drover
(cd "$ROOT" && cargo build --release -q -p drover-accounting --example accounting_bench) || exit 1
BENCH="$ROOT/target/release/examples/accounting_bench"
WORK=$(mktemp -d /tmp/drover-bench-acct.XXXXXX)
chmod 755 "$WORK"  # the postgres user keeps its data below it
PORT=$((10000 + $$ % 20000))
export DROVER_CONTROLLER=127.0.0.1:$PORT
cleanup() {
    (cd "$WORK" && "$DROVER" down >/dev/null 2>&1)
    [ "$PG" = 1 ] && "$ROOT/.ci/postgres.sh" stop "$WORK/pg"
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$SQLITE" = 1 ]; then
    echo "== SQLite, $ROWS rows"
    "$BENCH" "sqlite://$WORK/acct.db" "$ROWS"
fi
if [ "$PG" = 1 ]; then
    echo "== PostgreSQL, $ROWS rows"
    url=$("$ROOT/.ci/postgres.sh" start "$WORK/pg" $((PORT + 1))) || exit 1
    "$BENCH" "$url" "$ROWS"
fi

submit_rate() { # submit_rate ACCOUNTING: jobs/s of N CLI submissions
    local dir="$WORK/c-$1-$RANDOM"
    mkdir -p "$dir" && cd "$dir" || exit 1
    "$DROVER" up --detach --nodes 2 --cpus-per-node 4 --mem-per-node 2G --port "$PORT" --accounting "$1" >/dev/null || exit 1
    local t0 t1
    t0=$(now)
    for ((i = 0; i < N; i++)); do "$DROVER" submit --parsable -o /dev/null --wrap=true >/dev/null; done
    t1=$(now)
    "$DROVER" down >/dev/null 2>&1
    cd "$WORK" || exit 1
    rate "$N" "$(elapsed "$t0" "$t1")"
}
echo "== submit rate, accounting on (sqlite) vs off, $N jobs each, alternated"
for round in 1 2; do
    on=$(submit_rate "sqlite://$WORK/run-$round.db")
    off=$(submit_rate none)
    echo "round $round: on $on jobs/s, off $off jobs/s, ratio $(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.2f", a/b}')"
done
