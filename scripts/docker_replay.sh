#!/usr/bin/env bash
# Replay the Dockerfile's install steps without a container engine, then run a smoke test.
#
#   scripts/docker_replay.sh [WORK_DIR]
#
# The RUN instructions marked "[replay]" in the Dockerfile (virtual environment, PyTorch, the
# package from pyproject.toml) and the WORKDIR / COPY lines between them are extracted from the
# Dockerfile itself and run in order in a clean virtual environment under WORK_DIR (default: a new
# temporary folder), with the Dockerfile's ARG defaults and ENV values; container paths (/opt,
# /src, /workspace, /home/spikeyolo) are moved under WORK_DIR. System steps (apt-get, useradd) are
# listed and skipped. Then, from the installed package (not this checkout), the smoke test trains
# SpikeYOLO for one epoch on the embedded data, checks the run's files and exports the result to
# ONNX and NIR (docs/docker.md).
#
# Environment: VARIANT, CUDA_TAG, TORCH_INDEX_URL (the Dockerfile's build arguments; when
# TORCH_INDEX_URL is unset and download.pytorch.org cannot be reached, PyTorch comes from the pip
# configuration's indexes instead), PYTHON (python3), KEEP=1 keeps WORK_DIR.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/spikeyolo-replay.XXXXXX")}
mkdir -p "$work"
work=$(cd "$work" && pwd)
if [[ -z "${1:-}" && "${KEEP:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi

steps="$work/steps.sh"
"$python" - "$repo/Dockerfile" "$work" "$repo" > "$steps" <<'PY'
"""Translate the [replay] part of a Dockerfile into a bash script (printed on stdout)."""
import re
import shlex
import sys

dockerfile, work, repo = sys.argv[1:4]
MOVED = {"/opt/": f"{work}/opt/", "/src": f"{work}/src", "/workspace": f"{work}/workspace",
         "/home/spikeyolo": f"{work}/home"}


def moved(text):
    for old, new in MOVED.items():
        text = re.sub(rf"(?<![\w/.]){re.escape(old)}", new, text)
    return text


instructions, comments, current = [], [], ""
for raw in open(dockerfile, encoding="utf-8").read().splitlines():
    line = raw.rstrip()
    if not current and line.lstrip().startswith("#"):
        comments.append(line.lstrip("# ").strip())
        continue
    if not line.strip() and not current:
        comments = []
        continue
    current += line[:-1] + " " if line.endswith("\\") else line
    if not line.endswith("\\"):
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip(), any("[replay]" in c for c in comments)))
        current, comments = "", []

print("set -euo pipefail")
replay_runs = [i for i, (kw, _, marked) in enumerate(instructions) if kw == "RUN" and marked]
first, last = replay_runs[0], replay_runs[-1]
for index, (keyword, rest, marked) in enumerate(instructions):
    if keyword == "ARG":
        name, _, default = rest.partition("=")
        print(f"{name}=${{{name}-{default}}}")
    elif keyword == "ENV":
        for pair in shlex.split(rest):
            name, _, value = pair.partition("=")
            if name == "PATH":
                value = value.replace("$PATH", f"{work}/bin:$PATH")
            quoted = f'"{moved(value)}"' if "$" in value else shlex.quote(moved(value))  # "$..." expands
            print(f"export {name}={quoted}")
    elif first <= index <= last and keyword == "WORKDIR":
        print(f"mkdir -p {shlex.quote(moved(rest))} && cd {shlex.quote(moved(rest))}")
    elif first <= index <= last and keyword == "COPY":
        *sources, destination = shlex.split(rest)
        if destination.endswith("/"):  # into a folder
            print(f"mkdir -p {shlex.quote(moved(destination))}")
        for source in sources:
            print(f"cp -r {shlex.quote(f'{repo}/{source}')} {shlex.quote(moved(destination))}")
    elif keyword == "RUN" and marked:
        print("echo " + shlex.quote(f"--- replay: RUN {rest[:100]} ..."))
        print(f"( hash -r; {moved(rest)} )")  # a fresh command lookup, as each RUN is a new shell
    elif keyword == "RUN":
        print("echo " + shlex.quote(f"--- skipped (system setup): RUN {rest[:70]} ..."))
PY

mkdir -p "$work/bin" "$work/workspace"
ln -sf "$(command -v "$python")" "$work/bin/python"
if [[ -z "${TORCH_INDEX_URL+set}" ]]; then
    default="https://download.pytorch.org/whl/$([ "${VARIANT:-cpu}" = cuda ] && echo "${CUDA_TAG:-cu124}" || echo cpu)"
    if ! "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/', timeout=10)" \
            "$default" 2>/dev/null; then
        echo "note: $default cannot be reached; PyTorch comes from the pip configuration's indexes"
        export TORCH_INDEX_URL=https://pypi.org/simple
    fi
fi
echo "replaying $repo/Dockerfile in $work"
( PATH="$work/bin:$PATH" bash "$steps" )

# ---- smoke test, with the replayed environment's executables only
venv="$work/opt/spikeyolo"
export PATH="$venv/bin:$PATH" WANDB_MODE=offline WANDB_DIR="$work/workspace/wandb"
cd "$work/workspace"
location=$(python -c "import spikeyolo, os; print(os.path.dirname(spikeyolo.__file__))")
case "$location" in
    "$venv"/*) echo "spikeyolo installed from pyproject.toml into $location" ;;
    *) echo "error: spikeyolo was imported from $location, not from the replayed environment" >&2; exit 1 ;;
esac
run="$work/workspace/runs/smoke"
spikeyolo-train experiment=demo trainer.epochs=1 trainer.val_interval=1 model.width_multiple=0.0625 data.imgsz=64 \
    trainer.device=cpu trainer.max_minutes=null trainer.close_mosaic=0 trainer.progress=false run_dir="$run"
for file in config.yaml metrics.json model_card.md weights/best.pt weights/last.pt; do
    test -s "$run/$file" || { echo "error: the smoke run did not write $file" >&2; exit 1; }
done
spikeyolo-export checkpoint="$run/weights/best.pt" path=spike_driven run_dir="$work/workspace/runs/export"
spikeyolo-export checkpoint="$run/weights/best.pt" format=nir run_dir="$work/workspace/runs/export"
if spikeyolo-train trainer.epochz=1 2> "$work/bad.txt"; then
    echo "error: a bad key was accepted" >&2; exit 1
fi
grep -q "unknown config key 'trainer.epochz'" "$work/bad.txt"
echo "docker replay: OK (install steps replayed, 1-epoch training, ONNX and NIR export, bad input refused)"
