#!/usr/bin/env bash
# The prepared GPU check (#23): one command, about 8 minutes on one H200, that runs the `gpu`
# tests (GPU against CPU in one process) and the ParT, matrix-element, vertex-fit and sampling
# benchmarks at GPU sizes, each against its reference in the same command:
#   ParT            difphys (JAX) / weaver-core (PyTorch, CUDA, TF32 like JAX's default)
#   |M|^2           float64 |M|^2 per second at batches 1e4..1e6 (madgraph4gpu is not built there)
#   vertex fit      difphys Billoir / NDIVE's scheme (10 dense Newton steps), both on the GPU
#   sampling        FAB steps with the rolled layer scan (the GPU default) at batch 4096
#                   (SAMPLING_SCANS="rolled unrolled" adds the CPU's unrolled path for the ratio)
# Every step has its own time limit, so a slow step costs only its share.
#
#   bash benchmarks/gpu_check.sh            # writes into $OUT (the device tool) or OUT_DIR
#   GPU_CHECK_SMALL=1 bash benchmarks/gpu_check.sh   # CPU smoke run of the same plumbing
#
# Output (at most 4 files): gpu_check.jsonl (every JSON line of every step, each tagged with
# its step, plus one line per step with its exit code and seconds), gpu_check.log (the whole
# output), gpu_tests.xml (pytest's JUnit report).
# Wheels it can use, carried beside the checkout in .whl/ (not in git): weaver-core for the
# ParT reference; .whl/fallback/ (flax, optax, equinox, chex as tested here), installed only
# when difphys does not import with the machine's own versions.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${OUT:-${OUT_DIR:-$ROOT/benchmarks/results/gpu_check}}
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
JSONL=$OUT_DIR/gpu_check.jsonl
: > "$LOG"
: > "$JSONL"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
SMALL=${GPU_CHECK_SMALL:-}

step() {  # step NAME SECONDS COMMAND...: run, log, keep its JSON lines tagged with NAME
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=5 "$limit" "$@" > "$OUT_DIR/.step.out" 2>&1
    rc=$?
    cat "$OUT_DIR/.step.out" >> "$LOG"
    tail -n 12 "$OUT_DIR/.step.out"
    "$PY" - "$name" "$OUT_DIR/.step.out" >> "$JSONL" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
for line in open(path, errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            print(json.dumps({"step": name, **row}))
EOF
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" >> "$JSONL"
    rm -f "$OUT_DIR/.step.out"
    return $rc
}

install_wheels() {  # install_wheels DIR: the wheels of DIR into /tmp/gpu_check_site
    ls "$1"/*.whl > /dev/null 2>&1 || return 0
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu_check_site "$1"/*.whl && export PYTHONPATH=/tmp/gpu_check_site:$PYTHONPATH
}

ENV_PROBE='
import json, os, platform, subprocess, jax, flax, optax, equinox, numpy
import difphys
from difphys.nn import ParTConfig, ParticleTransformer
from flax import nnx
m = ParticleTransformer(ParTConfig.small(num_classes=2), rngs=nnx.Rngs(0))
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = None
d = jax.devices()[0]
print(json.dumps({"benchmark": "gpu_check_env", "python": platform.python_version(),
    "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
    "equinox": equinox.__version__, "numpy": numpy.__version__, "difphys": difphys.__version__,
    "platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
    "git_commit": os.environ.get("DIFPHYS_COMMIT") or commit}))
'

install_wheels .whl
if ! step env 45 "$PY" -c "$ENV_PROBE"; then
    echo "difphys does not import with this machine's packages: trying .whl/fallback" | tee -a "$LOG"
    install_wheels .whl/fallback
    step env_fallback 45 "$PY" -c "$ENV_PROBE" || exit 1
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv | tee -a "$LOG"

if [ -n "$SMALL" ]; then
    step tests 600 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider \
        --junitxml="$OUT_DIR/gpu_tests.xml"
    step part 300 "$PY" benchmarks/part_throughput.py --batch 8 --particles 16 --sizes small \
        --rounds 1 --steps 1 --warmup 1
    step matrix_elements 300 "$PY" benchmarks/matrix_elements.py --processes "e+ e- > mu+ mu-" \
        --min-batch 100 --max-batch 100 --backends --budget 1 --repeats 1 --chunk 0
    step vertex 300 "$PY" benchmarks/vertex_fit.py --jets 200 --ndive-jets 50
    step sampling 300 "$PY" benchmarks/sampling_throughput.py --batches 32 --scans unrolled \
        --steps 2 --levels 1 --updates 1 --eval 1000
else
    # Each step's limit is its time measured on an H200 (benchmarks/results/
    # gpu_check_h200.jsonl: tests 107 s, ParT small ~60 s + full 71 s, |M|^2 ~30 s + gg>ttgg
    # 83 s, vertex 63 s, FAB rolled 60 s; about 8 minutes in all) plus a margin; XLA's
    # compilations, not the timed calls, take most of each. The variables below select a
    # part of a step (as a rerun of the steps a first pass cut): GPU_CHECK_STEPS (default
    # all), GPU_CHECK_TESTS (pytest -k), PART_SIZES, ME_PROCESSES (';'-separated), ME_MAX,
    # SAMPLING_SCANS.
    want() { [ -z "${GPU_CHECK_STEPS:-}" ] || [[ " $GPU_CHECK_STEPS " == *" $1 "* ]]; }
    IFS=';' read -r -a procs <<< "${ME_PROCESSES:-e+ e- > mu+ mu-;g g > t t~ g;g g > t t~ g g}"
    want tests && step tests 140 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider \
        --junitxml="$OUT_DIR/gpu_tests.xml" ${GPU_CHECK_TESTS:+-k "$GPU_CHECK_TESTS"}
    want part && step part 170 "$PY" benchmarks/part_throughput.py --batch 512 --particles 128 \
        --sizes "${PART_SIZES:-small,full}" --rounds 3 --steps 10 --warmup 3 --torch-device cuda
    want matrix_elements && step matrix_elements 140 "$PY" benchmarks/matrix_elements.py \
        --processes "${procs[@]}" --min-batch 100000 --max-batch "${ME_MAX:-1000000}" \
        --backends --budget 2 --repeats 3 --chunk 65536
    want vertex && step vertex 90 "$PY" benchmarks/vertex_fit.py --jets 100000 --ndive-jets 2000
    want sampling && step sampling 90 "$PY" benchmarks/sampling_throughput.py --batches 4096 \
        --scans ${SAMPLING_SCANS:-rolled} --steps 10 --eval 50000
fi
echo "=== done: $(grep -c '"rc": 0' "$JSONL") steps passed; results in $OUT_DIR" | tee -a "$LOG"
