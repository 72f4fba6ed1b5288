#!/usr/bin/env bash
# Update vs encoder floor on CPU, one JSON line per config (results/bench_cpu/overhead_*.jsonl).
#   bash results/overhead_cpu.sh [TREE ...]   # each TREE is a checkout to bench (default: this one)
# Every figure of one line comes from one process: update, encoder passes alone and (at batch 256)
# the reference-style update are timed interleaved, one call of each per round, median of rounds.
set -uo pipefail
PY="${PYTHON:-python}"
trees=("${@:-.}")
configs=(
  "agent=drqv2 batch_size=256 --baseline"
  "agent=drqv2 batch_size=256 precision=bf16"
  "agent=drqv2 aux=taco batch_size=256 --baseline"
  "agent=drqv2 aux=taco batch_size=256 precision=bf16"
  "agent=drqv2 aux=taco batch_size=1024 --updates 3"
  "agent=drqv2 aux=taco batch_size=1024 precision=bf16 --updates 3"
)
for cfg in "${configs[@]}"; do
  for tree in "${trees[@]}"; do
    ( cd "$tree" && MUJOCO_GL="${MUJOCO_GL:-egl}" PYTHONPATH=. "$PY" -m taco_rl bench device=cpu $cfg --skip-env \
        2>/dev/null | "$PY" -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'tree': '$tree', 'config': '$cfg', **{k: v for k, v in r.items() if k != 'settings'}}))" )
  done
done
