#!/usr/bin/env bash
# Set up .venv if needed, lint, and run the tests. Extra arguments go to pytest.
# Usage: scripts/test.sh [--quick] [pytest args...]
#   (no flag)  the whole suite, about 18 minutes on 2 cores; the slowest 20 tests are listed
#   --quick    the inner loop, about 3 minutes: everything but the tests marked slow (long
#              acceptance runs, real browsers and servers, the fuzz campaigns)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/ruff check .
if [ "${1:-}" = "--quick" ]; then
  shift
  exec .venv/bin/python -m pytest -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest --durations=20 "$@"
