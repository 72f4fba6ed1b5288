#!/usr/bin/env bash
# GPU checks (pytest runs on CPU; these need a CUDA build of torch). From the repository root:
#   bash tests/gpu_check.sh 2>&1 | tee gpu_check.log
# On a GPU machine without this project's dependencies, run tests/gpu_prepare.sh here first and
# carry the two folders it makes (.gpu_site: Python packages, .gl: GL loaders) with the tree.
# Budget: under 5 minutes on one H100 (the step timeouts add up to 290 s). Prints the card, then
#   1. the fast-vs-plain update equivalence tests (their CUDA case included);
#   2. one JSON line per bench: update_ms / encoder_ms / overhead, the reference-style baseline
#      (--baseline), env frames/s with the env stepping overlapped (--loop-steps: loop_fps_thread vs
#      loop_fps_serial) and the projected hours per 1M frames, for TACO (batch 1024, K=3) in fp32 and
#      bf16 and for DrQ-v2 (batch 256);
#   3. the off-by-default options (unmeasured on CPU): torch.compile of the encoder;
#   4. the whole-run projection: env frames/s at num_envs 1 and 4 (env_fps_envs_N), one evaluation
#      serial vs eval_workers (eval_s_serial, eval_s_parallel) and hours_per_1M_frames with evaluation
#      (this step alone may take up to 240 s: size the budget before running it).
set -uo pipefail
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYTHONPATH="${PYTHONPATH:-.}"
PY="${PYTHON:-python3}"
if [ -d .gpu_site ]; then export PYTHONPATH=".gpu_site:$PYTHONPATH"; fi
if ls .gl/*.deb >/dev/null 2>&1 && ! ldconfig -p | grep -q "libEGL.so.1"; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
fi
bench() { timeout "$1" "$PY" -m taco_rl bench "${@:2}" || echo "{\"failed\": \"bench ${*:2}\", \"rc\": $?}"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
timeout 45 "$PY" -m pytest -q tests/test_speed_equivalence.py -k "agree or passes" -p no:cacheprovider
bench 60 agent=drqv2 aux=taco device=cuda --baseline --updates 10 --loop-steps 100 --num-envs ""
bench 45 agent=drqv2 aux=taco device=cuda precision=bf16 --updates 10 --skip-env
bench 50 agent=drqv2 batch_size=256 device=cuda --baseline --updates 10 --loop-steps 200 --num-envs ""
bench 35 agent=sac aux=taco device=cuda --updates 10 --skip-env
bench 60 agent=drqv2 aux=taco device=cuda --updates 10 --skip-env --compile
# the whole run: env frames/s with 1 and 4 envs in worker processes, one evaluation (10 cheetah_run
# episodes, the 256px video) in-process and with eval_workers=auto, hours per 1M frames with evaluation
bench 240 agent=drqv2 aux=taco device=cuda --updates 10 --loop-steps 100 --num-envs 1,4 --eval
echo "gpu_check: ${SECONDS} s"
# Not part of the 5 minutes: 100k frames of cartpole_balance with TACO (DrQ-v2's curves: 987 at 100k),
#   timeout 1500 "$PY" -m taco_rl train task=cartpole_balance aux=taco device=cuda frames=100000
