#!/usr/bin/env bash
# The throughput benchmarks at two revisions in one run, interleaved (A B A B), so that a
# refactoring can be shown to leave the figures unchanged within noise:
#   bash benchmarks/before_after.sh BASE_REV [OUT.jsonl]
# BASE_REV is checked out into a temporary git worktree and imported through PYTHONPATH
# with this checkout's virtual environment; every JSON line gets a "revision" field.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: before_after.sh BASE_REV [OUT.jsonl]}
out=${2:-benchmarks/results/before_after.jsonl}
py=${PYTHON:-.venv/bin/python}
tree=$(mktemp -d)
git worktree add -q --detach "$tree" "$base"
trap 'git worktree remove --force "$tree"' EXIT
: > "$out"
run() {  # run REVISION_LABEL SOURCE_DIR SCRIPT ARGS...
  local label=$1 src=$2 script=$3; shift 3
  PYTHONPATH="$src" "$py" "$src/benchmarks/$script" "$@" | while read -r line; do
    case "$line" in
      "{"*) echo "$line" | "$py" -c "import json,sys; d=json.loads(sys.stdin.read()); d['revision']='$label'; d['script']='$script'; print(json.dumps(d))" | tee -a "$out" ;;
    esac
  done
}
for round in 1 2; do
  for side in base head; do
    if [ "$side" = base ]; then src=$tree; label="base:$(git rev-parse --short "$base")"
    else src=$PWD; label="head:$(git rev-parse --short HEAD)"; fi
    run "$label" "$src" matrix_elements.py --max-batch 10000 --repeats 3
    run "$label" "$src" vertex_fit.py --jets 5000 --ndive-jets 500
    run "$label" "$src" part_throughput.py --sizes small --steps 3 --rounds 2
  done
done
