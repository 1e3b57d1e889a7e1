#!/usr/bin/env bash
# The GPU checks, in one run on a machine with a CUDA device:
#   1. the `cuda`-marked tests (tests/test_cuda.py: training in float32 and float64, exact resume,
#      rollouts against the CPU, symmetry on the GPU; DDP over NCCL when there are two GPUs),
#   2. training and rollout speed against the same machine's CPU (benchmarks/gpu_speed.py), and K models
#      trained as one ensemble against one after the other (benchmarks/ensemble_speed.py --device cuda),
#   3. a short training at the paper's scale (HLieConv SO(2), width 384, 4 layers, 3000 windows) on the
#      GPU, compiled (`--compile on`), then `hamnet evaluate` of it,
#   4. the spring benchmark end to end with training on the GPU (`benchmarks/springs.py --scale smoke
#      --device cuda`, scored on the CPU), in a scratch folder.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (default benchmarks/results/gpu). PYTHON picks the
# interpreter (default python3; hamnet is used from this checkout through PYTHONPATH, nothing installed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
EPOCHS=${PAPER_EPOCHS:-5}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PY" -c \
  "import torch, torchdiffeq; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchdiffeq', torchdiffeq.__version__)"; } \
  > "$OUT/machine.txt" 2>&1

echo "== 1. tests marked cuda"
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt" || status=1

echo "== 2. speed against the CPU"
"$PY" benchmarks/gpu_speed.py --out "$OUT" 2>&1 | tee "$OUT/gpu_speed.log" || status=1
"$PY" benchmarks/ensemble_speed.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/ensemble_speed.log" || status=1

echo "== 3. paper scale, $EPOCHS epochs on the GPU"
{
  start=$(date +%s)
  "$PY" -m hamnet.cli generate --n-systems 1000 --steps 500 --seed 0 --out "$WORK/train.npz" --quiet &&
  "$PY" -m hamnet.cli generate --n-systems 100 --steps 500 --seed 1 --out "$WORK/test.npz" --quiet &&
  "$PY" -m hamnet.cli train --data "$WORK/train.npz" --out "$WORK/run" --model hlieconv --group SO2 --width 384 \
      --depth 4 --max-windows 3000 --epochs "$EPOCHS" --batch-size 200 --lr 3e-3 --device cuda --compile on --quiet &&
  cat "$WORK/run/metrics.jsonl" &&
  "$PY" -m hamnet.cli evaluate --checkpoint "$WORK/run/best.pt" --data "$WORK/test.npz" --out "$WORK/metrics.json" &&
  "$PY" -c "import json; m = json.load(open('$WORK/metrics.json')); m['rollout_error'].pop('time'); \
m['rollout_error'].pop('mean_over_systems'); print(json.dumps(m, indent=1))"
  echo "paper-scale check took $(( $(date +%s) - start )) s"
} 2>&1 | tee "$OUT/paper_scale.txt" || status=1

echo "== 4. the spring benchmark, trained on the GPU"
"$PY" benchmarks/springs.py --scale smoke --device cuda --work "$WORK/bench" 2>&1 | tee "$OUT/springs_smoke_cuda.txt" \
  && grep -q "cuda" "$WORK/bench/springs_smoke/devices/hlieconv-t2_w100_seed0.jsonl" || status=1

rm -rf "$WORK"
exit $status
