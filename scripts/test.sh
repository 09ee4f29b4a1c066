#!/usr/bin/env bash
# The README's test command: installs what the tests need (Debian packages
# and Python modules; as root, or through sudo), then runs every test
# binary of the workspace — all of them, even after one fails — and says
# how long it took. Arguments go to `cargo test` (e.g. `--test slurm`).
#
# About 9 minutes on a 2-core machine from a cold target/ (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    echo "scripts/test.sh: '$*' needs root: run this script as root, or install: $missing_text" >&2
    exit 1
  fi
}

# ---- what the tests need, and what provides it
apt_need=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || apt_need+=("$2"); }
need_cmd python3 python3
need_cmd ip iproute2             # HA tests: network namespaces (skipped where they cannot be made)
need_cmd promtool prometheus     # observability: the metrics pass promtool
need_cmd chromium chromium       # the web dashboard, driven headless
need_cmd tmux tmux               # drover top
need_cmd useradd passwd          # security: an unprivileged attacker user
need_cmd bash bash
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_need+=(postgresql)  # accounting on PostgreSQL
python3 -m pip --version >/dev/null 2>&1 || apt_need+=(python3-pip)
missing_text="${apt_need[*]:-}"
if ((${#apt_need[@]})); then
  echo "== installing ${apt_need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_need[@]}"
fi

# Python modules: module name, then the package that provides it.
pip_need=()
need_py() { python3 -c "import $1" 2>/dev/null || pip_need+=("$2"); }
need_py websocket websocket-client              # the dashboard test speaks DevTools
need_py simple_slurm simple-slurm==0.3.6        # third-party Slurm clients, unchanged
need_py submitit submitit==1.5.2
need_py openapi_spec_validator openapi-spec-validator
command -v schemathesis >/dev/null 2>&1 || pip_need+=(schemathesis)  # fuzzes the live API
# An EC2 API stand-in on loopback for the healer's aws-ec2 provider.
{ command -v moto_server >/dev/null 2>&1 && python3 -c "import boto3, flask"; } 2>/dev/null || pip_need+=("moto[server,ec2]==5.2.1")
if ((${#pip_need[@]})); then
  echo "== installing ${pip_need[*]}"
  missing_text="${pip_need[*]}"
  # Debian marks its Python externally managed; these are test tools.
  as_root env PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q "${pip_need[@]}"
fi

# ---- a throwaway PostgreSQL on loopback for the accounting tests
pg_dir=$(mktemp -d /tmp/drover-test-pg.XXXXXX)
trap '.ci/postgres.sh stop "$pg_dir"' EXIT
DROVER_TEST_POSTGRES=$(.ci/postgres.sh start "$pg_dir" "$((20000 + $$ % 20000))")
export DROVER_TEST_POSTGRES
echo "== accounting tests also on $DROVER_TEST_POSTGRES"

# ---- every test binary, even after one fails
echo "== cargo test --workspace --no-fail-fast $*"
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
elapsed=$(($(date +%s) - started))
echo "== tests $([ "$status" = 0 ] && echo passed || echo FAILED) in $((elapsed / 60)) min $((elapsed % 60)) s"
exit "$status"
