#!/usr/bin/env bash
# GPU checks (not part of pytest: tests run on CPU). Run on a machine with a CUDA build of torch:
#   bash tests/gpu_check.sh > gpu.jsonl
# Prints one JSON line per measurement: DrQ-v2 at 256, TACO at 1024 in fp32 and bf16, each with the
# reference-style baseline measured in the same process.
set -euo pipefail
export MUJOCO_GL="${MUJOCO_GL:-egl}"
taco bench agent=drqv2 batch_size=256 device=cuda --baseline --updates 20
taco bench agent=drqv2 aux=taco device=cuda --baseline --updates 20 --skip-env
taco bench agent=drqv2 aux=taco device=cuda precision=bf16 --updates 20 --skip-env
taco bench agent=sac aux=taco device=cuda --updates 20 --skip-env
