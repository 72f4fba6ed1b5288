#!/usr/bin/env bash
# The learning results in results/learning/, end to end; every step resumes or is skipped when rerun.
#   1. DrQ-v2 on cartpole_balance_sparse, 40k frames (DrQ-v2's own settings: SPEC 4, easy-task std).
#   2. Its replay as a dataset ("replay", `taco data from-run`) and rollouts of its final policy
#      ("expert", `taco data collect policy=<the run>`, mean action).
#   3. BC, TD3+BC, CQL and IQL on each dataset, each without and with aux=taco, at batch 256.
#   4. The runs' logs copied into results/learning/runs/ (config.yaml, eval.csv, train.csv and an
#      offline run's dataset_info.json; no checkpoint), then `taco report --reference drqv2` of those
#      copies into results/learning/report/ (offline runs scored at 1,000 updates) and of the TD3+BC
#      expert runs at 3,000 updates into results/learning/report_3000/.
#   5. `probe`: what each offline policy does on its dataset's states (results/learning/probe.py), printed.
# Usage: bash results/learning/run.sh [online|data|offline|report|probe|all]   (default: all)
# Settings (environment): SEED (1), ROOT (runs/learning), DATA (data/learning), UPDATES (1000 offline
# updates a run), DATASETS ("expert replay"), AGENTS ("bc td3bc cql iql"), AUXES ("none taco"),
# EXPERT_EPISODES (10). The machine should be otherwise idle: other CPU work slows a 2-core update 2-3x.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"
SEED="${SEED:-1}"
ROOT="${ROOT:-runs/learning}"
DATA="${DATA:-data/learning}"
UPDATES="${UPDATES:-1000}"
DATASETS="${DATASETS:-expert replay}"
AGENTS="${AGENTS:-bc td3bc cql iql}"
AUXES="${AUXES:-none taco}"
EXPERT_EPISODES="${EXPERT_EPISODES:-10}"
TASK=cartpole_balance_sparse
what="${1:-all}"

online_run() {
  taco train task=$TASK frames=40000 seed="$SEED" device=cpu checkpoint_every_frames=10000 save_video=false \
    root="$ROOT" --no-progress
}

run_dir() {  # the online run's directory (its name ends in the config's hash)
  local dirs=("$ROOT/$TASK/drqv2-none/seed$SEED-"*)
  [ -d "${dirs[0]}" ] || { echo "no online run in $ROOT/$TASK/drqv2-none/seed$SEED-*: run '$0 online' first" >&2; exit 2; }
  echo "${dirs[0]}"
}

data() {
  local run
  run="$(run_dir)"
  [ -f "$DATA/cbs_replay_s$SEED/dataset.json" ] || taco data from-run "$run" out="$DATA/cbs_replay_s$SEED"
  [ -f "$DATA/cbs_expert_s$SEED/dataset.json" ] || \
    taco data collect policy="$run" episodes="$EXPERT_EPISODES" workers=2 out="$DATA/cbs_expert_s$SEED" --no-progress
  taco data info "$DATA/cbs_replay_s$SEED"
  taco data info "$DATA/cbs_expert_s$SEED"
}

offline() {
  local kind agent aux
  for kind in $DATASETS; do
    for agent in $AGENTS; do
      for aux in $AUXES; do
        # batch 256 for all (TD3+BC+TACO's published 1024 is 4x the cost); evaluated at 0 and at the end
        taco offline dataset="$DATA/cbs_${kind}_s$SEED" agent="$agent" aux="$aux" seed="$SEED" device=cpu \
          batch_size=256 updates="$UPDATES" eval_every_updates="$UPDATES" checkpoint_every_updates=250 \
          log_every_updates=100 save_video=false root="$ROOT/offline_$kind" --no-progress
      done
    done
  done
}

report() {
  local f
  (cd "$ROOT" && find . -name eval.csv -printf '%h\n') | while read -r f; do
    mkdir -p "results/learning/runs/$f"
    for name in config.yaml eval.csv train.csv dataset_info.json; do
      [ ! -f "$ROOT/$f/$name" ] || cp "$ROOT/$f/$name" "results/learning/runs/$f/$name"
    done
  done
  # every run at the common budget of 1,000 updates; the runs that went on (TD3+BC on the expert data,
  # UPDATES=3000) also at their end
  taco report results/learning/runs --reference drqv2 --update 1000 --out results/learning/report
  taco report "results/learning/runs/offline_expert/$TASK/td3bc-"* --update 3000 --out results/learning/report_3000
}

probe() {  # what the offline policies do on their dataset's states (results/learning/probe.py)
  local kind runs
  for kind in $DATASETS; do
    runs=("$ROOT/offline_$kind/$TASK/"*/seed"$SEED"-*)
    [ -d "${runs[0]}" ] || continue
    echo "## $kind (dataset $DATA/cbs_${kind}_s$SEED)"
    python results/learning/probe.py "$DATA/cbs_${kind}_s$SEED" "${runs[@]}"
  done
}

case "$what" in
  online) online_run ;;
  data) data ;;
  offline) offline ;;
  report) report ;;
  probe) probe ;;
  all) online_run; data; offline; report ;;
  *) echo "usage: $0 [online|data|offline|report|probe|all]" >&2; exit 2 ;;
esac
