#!/usr/bin/env bash
# Train TopoReg's learned models one after the other within a total wall-clock budget.
#
#   bash scripts/train_on_gpu.sh OUT_DIR [TOTAL_SECONDS=540]
#
# Run from the repository root. Needs only python with torch, numpy, safetensors (matplotlib optional) and the
# template cache built beforehand on a full install:
#   python -m toporeg.training.dataset_cache --out .bench-cache/toporeg_templates_2mm.npz
# (override the path with TOPOREG_TRAIN_CACHE). Uses CUDA when present, else the CPU.
# Jobs: VoxelMorph-diff 3D (55 % of the budget), VoxelMorph-diff 2D (20 %), DeepSim-seg 3D (20 %); each stops
# gracefully at its share. Each job works in WORK/<name>/ (CSV logs, loss_curve.png, report.json, checkpoint).
# OUT_DIR receives at most 8 files (the device runner's limit): <name>.safetensors + <name>.json (model card)
# for each model, training_logs.tar.gz (everything else except checkpoints) and summary.json (exit status and
# seconds per job).
# Environment: PYTHON (default python3 or python), TOPOREG_TRAIN_WORK (work folder, default a temporary one;
# give one to keep the checkpoints and resume), TOPOREG_TRAIN_CONFIGS (config folder),
# TOPOREG_TRAIN_SCALE (multiplies each config's step bound, e.g. 0.001 for a smoke test),
# TOPOREG_TRAIN_EXTRA (extra arguments for every job, e.g. "--device cpu --batch-size 1").
set -u

OUT="${1:-${OUT:-out/gpu_training}}"
TOTAL="${2:-540}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
CACHE="${TOPOREG_TRAIN_CACHE:-.bench-cache/toporeg_templates_2mm.npz}"
CONFIGS="${TOPOREG_TRAIN_CONFIGS:-TopoRegLib/src/toporeg/training/configs}"
SCALE="${TOPOREG_TRAIN_SCALE:-1}"
EXTRA="${TOPOREG_TRAIN_EXTRA:-}"
export PYTHONPATH="TopoRegLib/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if [ ! -f "$CACHE" ]; then
  echo "template cache $CACHE is missing: build it with" >&2
  echo "  python -m toporeg.training.dataset_cache --out $CACHE" >&2
  exit 2
fi
mkdir -p "$OUT"
WORK="${TOPOREG_TRAIN_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/toporeg_train.XXXXXX")}"
mkdir -p "$WORK"
"$PY" -c "import sys, torch, numpy, safetensors; print(sys.executable, 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$WORK/environment.txt"

START=$SECONDS
# name  module  config  share-of-total(%)
JOBS=(
  "vxm_diff_3d_2mm train_registration vxm_diff_3d_2mm.json 55"
  "vxm_diff_2d train_registration vxm_diff_2d.json 20"
  "deepsim_seg_3d train_deepsim deepsim_seg_3d.json 20"
)
SUMMARY="["
REMAINING_SHARE=100  # the 5 % not shared out is slack
for job in "${JOBS[@]}"; do
  read -r name module config share <<<"$job"
  left=$(( TOTAL - (SECONDS - START) ))
  # this job's share of what is left, keeping the later jobs' shares; ~8 s for python/torch/CUDA start-up
  budget=$(( left * share / REMAINING_SHARE - 8 ))
  REMAINING_SHARE=$(( REMAINING_SHARE - share ))
  if [ "$budget" -lt 5 ]; then
    echo "skipping $name: only ${left}s left" >&2
    SUMMARY="$SUMMARY{\"name\":\"$name\",\"status\":\"skipped\",\"seconds\":0},"
    continue
  fi
  steps=$("$PY" -c "import json,sys; c=json.load(open(sys.argv[1])); print(max(int(c['steps']*float(sys.argv[2])),1))" \
          "$CONFIGS/$config" "$SCALE")
  echo "== $name: budget ${budget}s, at most $steps steps" >&2
  t0=$SECONDS
  # shellcheck disable=SC2086
  "$PY" -m "toporeg.training.$module" --config "$CONFIGS/$config" --out "$WORK/$name" --name "$name" \
      --cache "$CACHE" --time-budget "$budget" --steps "$steps" $EXTRA 2>&1 | tee "$WORK/$name.log"
  status=${PIPESTATUS[0]}
  if [ "$status" -eq 0 ]; then
    cp "$WORK/$name/$name.safetensors" "$WORK/$name/$name.json" "$OUT/"
  fi
  SUMMARY="$SUMMARY{\"name\":\"$name\",\"status\":$status,\"seconds\":$(( SECONDS - t0 )),\"budget\":$budget},"
done
SUMMARY="${SUMMARY%,}]"
tar -C "$WORK" --exclude='*.safetensors' -czf "$OUT/training_logs.tar.gz" .
echo "{\"total_budget_s\": $TOTAL, \"total_seconds\": $(( SECONDS - START )), \"jobs\": $SUMMARY}" > "$OUT/summary.json"
cat "$OUT/summary.json"
