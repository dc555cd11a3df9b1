#!/usr/bin/env bash
# Run a long benchmark from a frozen copy of the code, in the background, so that later edits of this tree neither
# change it nor trip its resume checks: a `git worktree` at COMMIT (kept under $SB3_SAFE_FROZEN, default
# ~/.cache/sb3-safe/frozen), put first on PYTHONPATH with its plugins, running SCRIPT from that copy under nohup.
# The working directory stays this repository, so relative paths (exports under docs/) land here.
#
#   benchmarks/frozen_grid.sh COMMIT LOG benchmarks/circle_200k.py --out ~/grids/circle_200k --commit
#
# Run the same line again to continue a killed grid (the script resumes what GRID holds).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$repo" rev-parse "$1")
log=$2
script=$3
shift 3
frozen=${SB3_SAFE_FROZEN:-$HOME/.cache/sb3-safe/frozen}/$commit
[ -d "$frozen" ] || git -C "$repo" worktree add -q --detach "$frozen" "$commit"
path=$frozen
for plugin in "$frozen"/plugins/*/; do path=$path:${plugin%/}; done
cd "$repo"
PYTHONPATH=$path nohup "$repo/.venv/bin/python" "$frozen/$script" "$@" >>"$log" 2>&1 &
echo "PID $! runs $script from commit $commit (code in $frozen); log: $log"
