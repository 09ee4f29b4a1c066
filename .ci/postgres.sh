#!/usr/bin/env bash
# A throwaway PostgreSQL on loopback for the accounting tests:
#   .ci/postgres.sh start DIR PORT   (prints the URL to use)
#   .ci/postgres.sh stop DIR
# Debian's server binaries, run as the postgres user, data and socket in DIR.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "no PostgreSQL server here (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
dir=$2
case "$1" in
  start)
    port=$3
    rm -rf "$dir" && mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$bin/initdb -D $dir/data -A trust -U postgres >$dir/initdb.log 2>&1"
    as_pg "$bin/pg_ctl -D $dir/data -l $dir/server.log -w -t 30 \
      -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off' start >/dev/null"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -d "$dir/data" ] && as_pg "$bin/pg_ctl -D $dir/data -m fast -w stop >/dev/null" || true
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
