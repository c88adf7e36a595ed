#!/usr/bin/env bash
# Set up .venv if needed, lint, and run the whole test suite. Extra arguments go to pytest.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
