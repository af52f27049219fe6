# syntax=docker/dockerfile:1
# spikeyolo in a container: train, evaluate, measure and export spiking detectors (docs/docker.md).
#
#   CPU image (default):  docker build -t spikeyolo:cpu .
#   CUDA image:           docker build --build-arg VARIANT=cuda -t spikeyolo:cuda .
#   Train:                docker run --rm -v "$PWD/runs:/workspace/runs" spikeyolo:cpu spikeyolo-train experiment=demo
#
# The package and its dependencies come from pyproject.toml; the only thing chosen here is which
# PyTorch build (CPU or CUDA) is installed first. The steps marked [replay] are re-run outside a
# container by scripts/docker_replay.sh.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# cpu | cuda. The CUDA build of PyTorch carries its own CUDA runtime; the host needs an NVIDIA
# driver and the NVIDIA container toolkit (docker run --gpus all ...).
ARG VARIANT=cpu
# CUDA wheel tag of download.pytorch.org for VARIANT=cuda
ARG CUDA_TAG=cu124
# PyTorch wheel index; empty: https://download.pytorch.org/whl/cpu, or .../whl/$CUDA_TAG for cuda
ARG TORCH_INDEX_URL=""

ENV VENV=/opt/spikeyolo \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Offline by default (docs/design.md): wandb writes to the wandb volume until WANDB_MODE=online is
# passed; ultralytics gets a writable config folder and never downloads.
ENV PATH="$VENV/bin:$PATH" \
    WANDB_MODE=offline \
    WANDB_DIR=/workspace/wandb \
    YOLO_OFFLINE=1 \
    YOLO_AUTOINSTALL=0 \
    YOLO_CONFIG_DIR=/home/spikeyolo/.config/ultralytics \
    MPLCONFIGDIR=/home/spikeyolo/.config/matplotlib

# OpenCV (through ultralytics) needs libGL and glib at run time.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# [replay] a virtual environment with PyTorch for VARIANT (its own layer: the big one, cached
# across source changes). Versions are left to pyproject.toml's constraints, checked below.
# hadolint ignore=DL3013
RUN python -m venv "$VENV" \
    && index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$([ "$VARIANT" = cuda ] && echo "$CUDA_TAG" || echo cpu)}" \
    && pip install --index-url "$index" torch torchvision

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY spikeyolo ./spikeyolo
# [replay] the package with every dependency from pyproject.toml, plus the export extra (ONNX, NIR)
# hadolint ignore=DL3013
RUN pip install ".[export]" \
    && python -I -c "import spikeyolo, torch; print('spikeyolo', spikeyolo.__version__, 'torch', torch.__version__)"

# A non-root user; datasets, runs and the wandb folder are volumes under its working directory.
RUN useradd --create-home --uid 1000 --shell /bin/bash spikeyolo \
    && mkdir -p /workspace/datasets /workspace/runs /workspace/wandb "$YOLO_CONFIG_DIR" "$MPLCONFIGDIR" \
    && chown -R spikeyolo:spikeyolo /workspace /home/spikeyolo/.config
# numeric, so that the host resolves it (volumes: docker run --user "$(id -u):$(id -g)" ... also works)
USER 1000:1000
WORKDIR /workspace
VOLUME ["/workspace/datasets", "/workspace/runs", "/workspace/wandb"]

CMD ["spikeyolo-train", "--help"]
