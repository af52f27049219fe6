#!/usr/bin/env bash
# The one script of a GPU session for issue 28 ("Train as fast as YOLOv8 on a GPU"): prepared on a CPU-only machine,
# not yet run on a GPU (docs/benchmarks.md, "GPU check script (issue 28)").
#
# First, HERE (network): bash scripts/gpu_wheels.sh          # the missing packages as cp312 wheels into .whl/
# Then from the device tool:
#     run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=590)
#     run(command="DEMO=1 bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=590)   # + the GPU demo row (longer)
# Test here (no GPU; skips the wheel install, tiny settings, the project's .venv):
#     DEVICE=cpu bash scripts/gpu_check.sh
#
# Steps (each with a header, its time and return code; a failed step does not stop the others, the exit status is 1
# when any failed):
#   a. install .whl/*.whl (--no-index --no-deps) into /tmp/site, PYTHONPATH=/tmp/site:REPO; torch/CUDA/GPU versions
#   b. scripts/gpu_equal.py: CUDA vs CPU fp32, loop vs fused, AMP vs fp32 (forward outputs and all gradients)
#   c. scripts/bench_train.py --amp, batch 16, 640x640: YOLOv8s and SpikeYOLO-s T=1 and T=4 (fused) in one run
#   d. scripts/profile_train_step.py --amp: where a step's GPU time goes, SpikeYOLO-s T=1 and YOLOv8s
#   e. DEMO=1 only: spikeyolo-train experiment=demo trainer.device=0, timed, with its mAP (metrics.jsonl, .json)
# Expected default run (a-d) on an H100/H200: about 3-5 minutes (docs/benchmarks.md); the machine start is extra.
# Results go to $OUT (set by the device tool; at most 8 files come back) or runs/gpu_check/: gpu_check.log (all of
# the output), gpu_equal.md, bench_train.md, profile_spikeyolo_s.md, profile_yolov8s.md (+ demo.log with DEMO=1).
# Knobs (environment): DEVICE=cuda|cpu, PY (python), REPEATS (15), BACKENDS ("fused"), T_BENCH ("1 4"),
# SKIP="c e" (steps to skip).
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
export PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
exec > >(tee -a "$LOG") 2>&1
SKIP=${SKIP:-}

if [ "$DEVICE" = cpu ]; then   # the dry run: every step on the CPU, tiny settings, this checkout's .venv
  PY=${PY:-$REPO/.venv/bin/python}
  SCALE=n; IMGSZ=64; BATCH=2; REPEATS=${REPEATS:-2}; WARMUP=1; T_BENCH=${T_BENCH:-"1 2"}; EQ_ARGS="--imgsz 64"
  PROFILE_STEPS=2; AMP=""; THREADS="--threads 2"
else
  PY=${PY:-python3}
  SCALE=s; IMGSZ=640; BATCH=16; REPEATS=${REPEATS:-15}; WARMUP=3; T_BENCH=${T_BENCH:-"1 4"}; EQ_ARGS=""
  PROFILE_STEPS=5; AMP="--amp"; THREADS=""
fi
BACKENDS=${BACKENDS:-fused}

T0=$(date +%s)
FAILED=()
SUMMARY=()
step() {   # step LETTER TITLE COMMAND...
  local letter=$1 title=$2; shift 2
  if [[ " $SKIP " == *" $letter "* ]]; then echo "=== ($letter) $title: skipped (SKIP) ==="; return; fi
  echo
  echo "=== ($letter) $title  [$(date -u +%H:%M:%S), ${DEVICE}] ==="
  local t=$(date +%s)
  "$@"
  local rc=$?
  local took=$(( $(date +%s) - t ))
  echo "=== ($letter) $title: rc=$rc, ${took} s (total $(( $(date +%s) - T0 )) s) ==="
  SUMMARY+=("($letter) $title: rc=$rc, ${took} s")
  [ "$rc" -eq 0 ] || FAILED+=("$letter")
}

install() {
  if [ "$DEVICE" = cpu ]; then
    echo "DEVICE=cpu: no install, $PY with PYTHONPATH=$REPO"
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
  else
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/*.whl: run bash scripts/gpu_wheels.sh here and carry .whl"; return 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || return 1
    # the project is pure Python: from the checkout (no build, no network); `spikeyolo-train` is `-m spikeyolo.cli.train`
    export PYTHONPATH=/tmp/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
  fi
  "$PY" - <<'EOF'
import platform, sys
import torch, torchvision
import spikeyolo, spikeyolo.cli.train, spikingjelly, ultralytics, hydra, omegaconf, pycocotools
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}; torchvision "
      f"{torchvision.__version__}; CUDA {torch.version.cuda}; cuDNN {torch.backends.cudnn.version()}")
print(f"spikeyolo from {spikeyolo.__file__}; ultralytics {ultralytics.__version__}; hydra {hydra.__version__}")
try:
    import faster_coco_eval
    print(f"faster-coco-eval {faster_coco_eval.__version__}")
except Exception as error:   # optional extra
    print(f"faster-coco-eval not importable: {error}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}")
else:
    print("no CUDA device")
EOF
  local rc=$?
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  return $rc
}

equal() { "$PY" scripts/gpu_equal.py --device "$DEVICE" $EQ_ARGS --out "$OUT/gpu_equal.md"; }

bench() {
  # shellcheck disable=SC2086
  "$PY" scripts/bench_train.py --device "$DEVICE" $AMP --batch "$BATCH" --scales "$SCALE" --imgsz "$IMGSZ" \
    --time-steps $T_BENCH --backends $BACKENDS --repeats "$REPEATS" --warmup "$WARMUP" $THREADS \
    --append "$OUT/bench_train.md"
}

profile() {
  local kind=$1 file=$2
  "$PY" scripts/profile_train_step.py --device "$DEVICE" $AMP --kind "$kind" --scale "$SCALE" --imgsz "$IMGSZ" \
    --batch "$BATCH" --time-steps 1 --steps "$PROFILE_STEPS" --warmup "$WARMUP" $THREADS 2>&1 \
    | grep -v -e "^USDT:" -e "SyncActivityProfilerHandler" | tee "$OUT/$file"
  return "${PIPESTATUS[0]}"
}

demo() {
  local extra=()
  [ "$DEVICE" = cpu ] && extra=(trainer.device=cpu trainer.epochs=1 trainer.val_interval=1 data.imgsz=64) \
    || extra=(trainer.device=0)
  local started=$(date +%s)
  "$PY" -m spikeyolo.cli.train experiment=demo "${extra[@]}" 2>&1 | tee "$OUT/demo.log"
  local rc=${PIPESTATUS[0]}
  echo "demo: ${rc} after $(( $(date +%s) - started )) s (trainer.device=${extra[0]#trainer.device=})"
  "$PY" - <<'EOF'
import glob, json, os
runs = sorted(glob.glob("runs/demo_spikeyolo_n/*/metrics.jsonl"), key=os.path.getmtime)
if not runs:
    raise SystemExit("no runs/demo_spikeyolo_n/*/metrics.jsonl")
records = [json.loads(line) for line in open(runs[-1]) if line.strip()]
maps = [r for r in records if any("map" in k.lower() for k in r)]
last = maps[-1] if maps else {}
print(f"{runs[-1]}: {len(records)} records; last with mAP: "
      + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()
                  if "map" in k.lower() or k in ("epoch", "step")))
final = os.path.join(os.path.dirname(runs[-1]), "metrics.json")   # the final evaluation of best.pt
if os.path.exists(final):
    metrics = json.load(open(final))
    print(f"{final}: " + ", ".join(f"{k}={metrics[k]}" for k in ("map50", "map50_95", "yolo_map50", "images",
                                                                  "time_ms_per_image") if k in metrics))
EOF
  return "$rc"
}

step a "install the carried wheels and the project; versions" install
[[ " ${FAILED[*]:-} " == *" a "* ]] && echo "install failed: the later steps will most likely fail too"
step b "gpu_equal.py: CUDA vs CPU, loop vs fused, AMP vs fp32" equal
step c "bench_train.py: YOLOv8$SCALE vs SpikeYOLO-$SCALE T=${T_BENCH// /,}, batch $BATCH, ${IMGSZ}px ${AMP:-(no AMP)}" bench
step d "profile_train_step.py: SpikeYOLO-$SCALE T=1" profile spikeyolo "profile_spikeyolo_$SCALE.md"
step d "profile_train_step.py: YOLOv8$SCALE" profile yolov8 "profile_yolov8$SCALE.md"
if [ "${DEMO:-0}" = 1 ]; then
  step e "demo: spikeyolo-train experiment=demo on $DEVICE" demo
else
  echo; echo "=== (e) demo: not run (DEMO=1 to run it) ==="
fi

echo
echo "=== summary (${DEVICE}, total $(( $(date +%s) - T0 )) s) ==="
printf '%s\n' "${SUMMARY[@]}"
echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "FAILED steps: ${FAILED[*]}"
  exit 1
fi
echo "all steps passed"
