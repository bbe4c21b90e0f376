#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine, idempotently:
#   - Debian packages: ffmpeg (with ffprobe), espeak-ng (sample adverts in tests),
#     docker-compose (validates docker-compose.yml without an engine), chromium (the dashboard's
#     browser tests), PostgreSQL when absent;
#   - a running local PostgreSQL (started when stopped);
#   - the Python virtual environment .venv with the project, its dev extras and the local
#     embedding model (LOCAL_EMBEDDINGS=0 leaves the model out).
# Used by scripts/test.sh, scripts/demo.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
# The dashboard's browser tests (tests/e2e/test_dashboard.py) drive Debian's Chromium.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL: the tests and the default DATABASE_URL use 127.0.0.1:5432 as user postgres.
if [ -z "${DATABASE_URL:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "==> starting PostgreSQL"
  for version in $(ls /etc/postgresql 2>/dev/null); do
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
      || $SUDO pg_ctlcluster "$version" main start || true
  done
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
  pg_isready -h 127.0.0.1 -p 5432 || { echo "error: PostgreSQL did not start" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> installing Python packages"
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
extras="dev"
# The local embedding model needs torch: its CPU build first, or pip would take a CUDA build of
# several GB. LOCAL_EMBEDDINGS=0 skips both (the pipeline then records embeddings as skipped).
if [ "${LOCAL_EMBEDDINGS:-1}" != "0" ]; then
  .venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
  extras="dev,local-embeddings"
fi
.venv/bin/python -m pip install -q -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import grpc, psycopg, fastapi, boto3, openai" \
  || { echo "error: Python packages did not install" >&2; exit 1; }
