#!/usr/bin/env bash
# The main job on a fresh machine: install (scripts/setup.sh), then run the whole stack on its
# embedded default and ingest a sample advert (python -m scripts.demo; --exit stops afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m scripts.demo "$@"
