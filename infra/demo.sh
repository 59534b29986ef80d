#!/usr/bin/env bash
# Set up everything, then run the whole hybridops story on embedded defaults (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
exec "${HYBRIDOPS_VENV:-.venv}/bin/hybridops" demo "$@"
