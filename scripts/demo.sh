#!/usr/bin/env bash
# The demo: a leaking automaton under memwarden, then the analysis of what memwarden saw.
# Sets up .venv first (see scripts/setup.sh). Takes about 40 seconds.
# Usage: scripts/demo.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
seconds=${1:-30}
out=demo-output
rm -rf "$out" && mkdir -p "$out"
echo "== memwarden run: an automaton that keeps every object and leaks 4 KB a step"
echo "   (MEDIUM at 30MB asks it to trim; HIGH at 45MB replaces it with tighter limits)"
(cd "$out" && ../.venv/bin/memwarden run --medium 30MB --high 45MB --critical 80MB \
    --cooldown 5s --sample-period 0.25s --snapshots snapshots \
    -- ../.venv/bin/python ../scripts/example_automaton.py --until "$(( $(date +%s) + seconds ))" \
       --leak-kb 4)
echo
echo "== memwarden analyze $out/snapshots"
.venv/bin/memwarden analyze "$out/snapshots" --window 0.5s
.venv/bin/memwarden analyze "$out/snapshots" --window 0.5s --format html -o "$out/report.html"
echo
echo "HTML report: $out/report.html"
