#!/usr/bin/env bash
# Data-free SBIR on one CUDA GPU, at GPU schedule lengths, within 8 minutes (issue 19):
#   bash benchmarks/gpu_dfl.sh [SHARED_DATA=../shared/data] [OUT=/tmp/gpu_dfl]
#   GPU_DFL_DRY_RUN=1 bash benchmarks/gpu_dfl.sh ...   # no GPU: on the CPU, the teachers train one
#       step and every other command checks its config with --dry-run (nothing evaluated), so a
#       bad override shows before the GPU time is spent
# Runs, each with bf16 autocast and channels-last tensors (train.amp=bf16, train.channels_last):
#   1. the paper-like teachers (classifier-cifar9-photo, classifier-quickdraw9-sketch), their
#      preset schedules;
#   2. crossx_dfl-cifar9_quickdraw9 (stroke sketch estimator) at the official code's epoch count,
#      2,000 student steps, with an estimator round of 5 steps at batch 256 after every student
#      step (10,000 estimator steps; the official 2,000 x 500 steps at batch 512 is a million and
#      does not fit in 8 minutes on any one GPU);
#   3. crossx_dfl-doodlenet_effnet (real teachers), 2,000 student steps, a round of 5 estimator
#      steps at batch 128 every 2 student steps (5,000 estimator steps);
#   4. sbirkit eval of both runs and the classifier-only baselines on the same teachers.
# Every command runs under `timeout` (its own share of the 8 minutes) and resumes from last.pt if
# the script is run again; timings and metrics go to OUT/gpu_dfl.jsonl. Nothing here has been run
# on a GPU yet (no GPU has been lent): see BENCHMARKS.md, "GPU check".
set -euo pipefail
SHARED=$(cd "${1:-../shared/data}" && pwd)
OUT=${2:-/tmp/gpu_dfl}
PY=${PYTHON:-python}
mkdir -p "$OUT/runs"
LOG="$OUT/gpu_dfl.jsonl"
DRY=${GPU_DFL_DRY_RUN:-0}
DEVICE=$([ "$DRY" = 1 ] && echo cpu || echo cuda)
GPU="train.device=$DEVICE train.amp=bf16 train.channels_last=true train.progress=false"
DOODLE="method.sketch_teacher.weights=$SHARED/doodlenet/doodleNet-model.h5"
# an array: each override holds a space ("{run: PATH}"), which word splitting would cut in two
TEACHERS=("method.photo_teacher={run: $OUT/runs/classifier-cifar9-photo}"
          "method.sketch_teacher={run: $OUT/runs/classifier-quickdraw9-sketch}")
START=$(date +%s)

run() {  # run NAME SECONDS sbirkit-arguments...
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  local rc=0
  if [ "$DRY" = 1 ]; then  # teachers: one step (the students need their checkpoints); the rest: --dry-run
    limit=600
    case "$name" in teacher-*) set -- "$@" train.steps=1 train.eval_every=0 ;; *) set -- "$@" --dry-run ;; esac
  fi
  timeout "$limit" "$PY" -m sbirkit "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  if [ "$DRY" = 1 ] && [ "$rc" != 0 ]; then tail -n 3 "$OUT/$name.log"; FAILED=1; fi
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 )), \"elapsed\": $(( $(date +%s) - START ))}" | tee -a "$LOG"
}

evaluate() {  # evaluate NAME RUN
  run "eval-$1" 60 eval "$2" --split test --data root="$SHARED"
  grep -E "map|p@200" "$OUT/eval-$1.log" | head -3 | sed "s/^/  $1: /" || true
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
run teacher-photo 60 train classifier-cifar9-photo data.root="$SHARED" $GPU --run-dir "$OUT/runs/classifier-cifar9-photo"
run teacher-sketch 40 train classifier-quickdraw9-sketch data.root="$SHARED" $GPU --run-dir "$OUT/runs/classifier-quickdraw9-sketch"
# shellcheck disable=SC2086
run paper-crossx 150 train crossx_dfl-cifar9_quickdraw9 data.root="$SHARED" $GPU "${TEACHERS[@]}" \
  train.steps=2000 method.estimator_every=1 method.estimator_steps=5 method.estimator_batch=256 train.batch_size=256 \
  method.pool_size=65536 train.eval_every=500 --run-dir "$OUT/runs/crossx_dfl-cifar9_quickdraw9"
# shellcheck disable=SC2086
run paper-classifier-only 20 train dfl_classifier_only-cifar9_quickdraw9 data.root="$SHARED" $GPU "${TEACHERS[@]}" \
  --run-dir "$OUT/runs/dfl_classifier_only-cifar9_quickdraw9"
run real-crossx 150 train crossx_dfl-doodlenet_effnet data.root="$SHARED" "$DOODLE" $GPU \
  train.steps=2000 method.estimator_every=2 method.estimator_steps=5 method.estimator_batch=128 train.batch_size=128 \
  method.pool_size=32768 train.eval_every=500 --run-dir "$OUT/runs/crossx_dfl-doodlenet_effnet"
run real-classifier-only 20 train dfl_classifier_only-doodlenet_effnet data.root="$SHARED" "$DOODLE" $GPU \
  method.classifier_output=probs --run-dir "$OUT/runs/dfl_classifier_only-doodlenet_effnet"
if [ "$DRY" = 1 ]; then
  echo "dry run: $([ "${FAILED:-0}" = 1 ] && echo 'FAILED (see above)' || echo 'every command checked') in $(( $(date +%s) - START )) s; log: $LOG"
  exit "${FAILED:-0}"
fi
for r in crossx_dfl-cifar9_quickdraw9 dfl_classifier_only-cifar9_quickdraw9 crossx_dfl-doodlenet_effnet \
         dfl_classifier_only-doodlenet_effnet; do
  evaluate "$r" "$OUT/runs/$r"
done
echo "total $(( $(date +%s) - START )) s (budget 480 s); log: $LOG"
