#!/usr/bin/env bash
# Prepares, on a machine with PyPI, what tests/gpu_check.sh needs on a GPU machine that has PyTorch
# (CUDA) but not this project's other dependencies and cannot download: from the repository root,
#   bash tests/gpu_prepare.sh [PYTHON_VERSION]      # default 3.12, the GPU image's python3
# It writes two ignored folders for the device tool to carry (about 48 MiB for Python 3.12; the device tool carries at most 64 MiB):
#   .gpu_site/  dm_control, MuJoCo, tensordict, omegaconf, gymnasium and their small dependencies,
#               installed for that Python. Not torch, numpy, lxml, absl-py, h5py, tensorboard,
#               imageio, scipy, matplotlib or tqdm: the GPU image has them. Left out to fit the
#               carry limit: dm_control's assets no task of this suite loads (locomotion, soccer,
#               dog, test models) and MuJoCo's viewers and C headers;
#   .gl/        the GL loader packages (libEGL, libOpenGL, libglvnd) for headless MuJoCo rendering,
#               unpacked by gpu_check.sh only where the machine lacks libEGL.
# Then, with the device tool: carry [".gpu_site", ".gl"], command "bash tests/gpu_check.sh".
set -euo pipefail
PY="${PYTHON:-python3}"
pyver="${1:-3.12}"
rm -rf .gpu_site && mkdir -p .gpu_site
"$PY" -m pip install -q --target .gpu_site --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "dm_control==1.0.50" "mujoco>=3.2,<4" "tensordict>=0.8" "omegaconf>=2.3" antlr4-python3-runtime \
  "gymnasium>=1.0" farama-notifications glfw PyOpenGL dm-env dm-tree orjson pyvers
rm -rf .gpu_site/dm_control/locomotion/soccer .gpu_site/dm_control/locomotion/walkers/assets \
  .gpu_site/dm_control/suite/dog_assets .gpu_site/dm_control/mujoco/testing .gpu_site/dm_control/blender \
  .gpu_site/bin .gpu_site/mujoco/experimental .gpu_site/mujoco/include .gpu_site/mujoco/_render_filament* \
  .gpu_site/OpenGL/DLLS
find .gpu_site -name "__pycache__" -prune -exec rm -rf {} +
rm -rf .gl && mkdir -p .gl /tmp/gpu_prepare_apt/partial
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/gpu_prepare_apt)
if apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1; then
  (cd .gl && apt-get "${apt_opts[@]}" download libegl1 libglvnd0 libopengl0 libgl1 libglx0 >/dev/null 2>&1) \
    || echo "gpu_prepare: could not download the GL loaders (.gl stays empty)"
else
  echo "gpu_prepare: apt-get update failed: .gl stays empty"
fi
du -sh .gpu_site .gl
