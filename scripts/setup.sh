#!/usr/bin/env bash
# Create (or reuse) .venv beside the project and install memwarden into it with its dev extras.
# Sourced by scripts/demo.sh and scripts/test.sh, so both work on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
