#!/usr/bin/env bash
# Set up everything and run the whole test suite against real servers and real models.
# pytest's exit code is passed through, so "no tests collected" (5) fails like any other error.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh --production-if-possible  # PostgreSQL too, for tests/integration/test_production_topology.py
# Optional test tool: lets the compose-file test run `docker-compose config` (best effort, root only).
if ! command -v docker-compose >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -qq docker-compose >/dev/null 2>&1 || true)
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
exec "${HYBRIDOPS_VENV:-.venv}/bin/pytest" tests -p no:cacheprovider --timeout 1800 --durations=30 "$@"
