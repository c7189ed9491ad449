#!/usr/bin/env bash
# The GPU check (issue 21): on a CUDA machine, in about 10 minutes,
#   1. the gpu-marked tests (a skipped one fails the check: it hides a missing piece);
#   2. one training step of every preset in bf16 with channels_last (teachers trained for one step);
#   3. an NCCL process group of one process (all_reduce, the engine's all_gather, barrier);
#   4. training img/s of the demo's run and of triplet_sn-qmul_v1-grid.
# Every stage runs; the summary names the ones that failed and the exit code is 1 if any did.
# Record the output in BENCHMARKS.md ("GPU check"), with the device the `device` tool lent
# (or that none was lent).
#
#   bash benchmarks/gpu_check.sh                       # everything (real data: $SBIRKIT_SHARED_DATA)
#   bash benchmarks/gpu_check.sh --skip-missing-data   # presets without data listed as skipped, not failed
#   bash benchmarks/gpu_check.sh --dry-run             # no GPU: check the plan and this script on the CPU
#
# PYTHON (default .venv/bin/python, else python3) runs it; the repository's src/ comes first on
# PYTHONPATH, so the checkout is what is checked.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DRY=0
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --skip-missing-data) EXTRA+=("--skip-missing-data") ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $arg (expected --dry-run, --skip-missing-data)" >&2; exit 2 ;;
  esac
done

FAILED=()
stage() {  # stage NAME COMMAND...: run it, time it, remember a failure
  local name=$1; shift
  echo "==== $name"
  local t0=$SECONDS
  if "$@"; then
    echo "---- $name: ok ($((SECONDS - t0)) s)"
  else
    echo "---- $name: FAILED ($((SECONDS - t0)) s)"
    FAILED+=("$name")
  fi
}

"$PY" -c "import sbirkit, torch" || { echo "error: $PY cannot import sbirkit and torch (set PYTHON)" >&2; exit 1; }
echo "python: $PY; $("$PY" -c 'import torch, sbirkit; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), sbirkit {sbirkit.__version__}")')"

if [ "$DRY" = 1 ]; then
  # no GPU needed: the plan of every preset, the gpu tests collected, the stages' code paths on the CPU
  stage "plan (every preset's one-step config, checked)" "$PY" benchmarks/gpu_check.py plan
  stage "gpu tests collected" bash -c "\"$PY\" -m pytest -q -p no:cacheprovider --collect-only -m gpu tests \
    | grep -E '^[0-9]+/[0-9]+ tests collected|^[0-9]+ tests? collected' | grep -vE '^0( |/)'"
  stage "one step on the CPU (two presets)" "$PY" benchmarks/gpu_check.py presets --cpu --only "triplet*-synthetic"
  stage "process group of one on the CPU (gloo)" "$PY" benchmarks/gpu_check.py nccl --cpu
else
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "error: no CUDA device here (nvidia-smi or torch.cuda.is_available() says so); run with --dry-run on a CPU" >&2
    exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  stage "gpu tests" "$PY" benchmarks/gpu_check.py gpu-tests
  stage "one bf16 + channels_last step of every preset" "$PY" benchmarks/gpu_check.py presets "${EXTRA[@]}"
  stage "NCCL process group of one" "$PY" benchmarks/gpu_check.py nccl
  stage "throughput (img/s)" "$PY" benchmarks/gpu_check.py throughput
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'GPU CHECK FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo "GPU CHECK PASSED$([ "$DRY" = 1 ] && echo ' (dry run on the CPU: nothing ran on a GPU)')"
