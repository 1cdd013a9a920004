#!/usr/bin/env bash
# One command for every GPU figure of maekit (speed, memory, correctness): see gpu_suite.py.
#   bash benchmarks/gpu_suite.sh            # GPU machine, budgeted for < 8 min on one H200
#   bash benchmarks/gpu_suite.sh --smoke    # CPU, tiny shapes (checks the suite itself)
# Writes benchmarks/out/gpu_suite.json and gpu_suite.md (--out DIR to change).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$here/../.venv/bin/python" ]]; then py="$here/../.venv/bin/python"; else py="python3"; fi
fi
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${SUITE_TIMEOUT:-590}" "$py" "$here/gpu_suite.py" "$@"
