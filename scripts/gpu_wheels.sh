#!/usr/bin/env bash
# Download, HERE (a machine with network), every wheel the lent GPU machine lacks into .whl/ (git-ignored), for
# CPython 3.12 x86-64 (the GPU machine: /opt/torch/.venv, Python 3.12.3, torch 2.11.0+cu130, torchvision 0.26.0, numpy,
# opencv-python-headless, matplotlib, scipy, pandas, pyyaml, tqdm, psutil, pillow, h5py, packaging installed; no
# network). scripts/gpu_check.sh installs them there with --no-index --no-deps. torch/torchvision are NOT carried.
#
#     bash scripts/gpu_wheels.sh            # idempotent: skips a wheel already in .whl/, prints the total size
#
# The versions are the ones this project's .venv uses (pip list), so the GPU run tests the same code.
# What the import chain needs beyond the machine's packages (checked in a clean venv, see docs/benchmarks.md):
#   spikingjelly (+ loguru), ultralytics (+ ultralytics-thop, nvidia-ml-py for pynvml), hydra-core, omegaconf,
#   antlr4-python3-runtime (sdist only on PyPI: built here into a pure-Python wheel), pycocotools, faster-coco-eval
#   (compiled, cp312 wheels: cannot be imported here, Python 3.11), requests and its deps (ultralytics' checks).
# Not carried: polars (ultralytics imports it lazily, only for its own trainer/plots: ~40 MB), ultralytics-platform,
# wandb, tensorboard, SciencePlots, torchaudio (spikingjelly's metadata lists them; the code paths used do not import
# them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=.whl
mkdir -p "$DEST"

WHEELS=(
  spikingjelly==2.0.0
  loguru==0.8.0
  ultralytics==8.4.190
  ultralytics-thop==2.2.3
  nvidia-ml-py==13.615.71
  hydra-core==1.3.8
  omegaconf==2.3.1
  pycocotools==2.0.11
  faster-coco-eval==1.8.0
  requests==2.34.2
  urllib3==2.8.0
  idna==3.21
  charset-normalizer==3.5.3
  certifi==2026.10.19.post1
)
SDIST_ONLY=(antlr4-python3-runtime==4.9.3)

have() {  # is a wheel of NAME==VERSION already in .whl/? (wheel names normalise - to _)
  local name=${1%%==*} version=${1##*==}
  ls "$DEST" 2>/dev/null | grep -qi "^${name//-/_}-${version}-"
}

for spec in "${WHEELS[@]}"; do
  if have "$spec"; then echo "have $spec"; continue; fi
  echo "download $spec"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$spec"
done
for spec in "${SDIST_ONLY[@]}"; do
  if have "$spec"; then echo "have $spec"; continue; fi
  echo "build wheel $spec (pure Python)"
  "$PY" -m pip wheel -q --no-deps "$spec" -w "$DEST"
done

# a compiled wheel must be for cp312 (the GPU machine), not for this machine's Python
for whl in "$DEST"/*.whl; do
  case "$whl" in
    *-none-any.whl|*-cp312-*|*-abi3-*) ;;
    *) echo "WRONG ABI for the GPU machine (Python 3.12): $whl" >&2; exit 1 ;;
  esac
done
ls -1 "$DEST"
echo "total: $(du -sh "$DEST" | cut -f1) in $(ls "$DEST"/*.whl | wc -l) wheels"
