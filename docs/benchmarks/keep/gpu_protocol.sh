#!/usr/bin/env bash
# Issue 18's GPU protocol in one device call: 16 runs of 256 per class (classes 7, 3, 1), 50 steps, CFG 2, the
# continued memory, both controls and SPELL, each method in its own process (with plain and the real floor as its
# baseline, which tables.py keeps once), all at once. Each process writes its rows as its runs finish, and they are
# gathered into one rows.jsonl at the end, so a process cut off by BUDGET (seconds for the whole script, inside the
# call's 600) still returns every run it finished. A short
# smoke run on the device comes first and stops the call if it fails.
#
# Here, once per session (the wheels the device image lacks; .whl is ignored by git, 26 MB):
#     bash docs/benchmarks/keep/gpu_protocol.sh wheels
# On the device (the run tool, carry [".whl"], timeout_s 600):
#     bash docs/benchmarks/keep/gpu_protocol.sh        ($OUT is set there)
# A dry run on this CPU, same script:
#     PY=.venv/bin/python DEVICE=cpu R=2 N=16 STEPS=5 CLASSES=7 OUT=/tmp/keep_gpu_dry bash docs/benchmarks/keep/gpu_protocol.sh
# Then, here: python docs/benchmarks/keep/tables.py FILES_AT/rows.jsonl > docs/benchmarks/keep/gpu_16x256/tables.md
set -u
t0=$(date +%s)
cd "$(dirname "$0")/../../.."
if [ "${1:-}" = wheels ]; then  # the versions of this project's CPU environment, for the device's Python 3.12
    for p in diffusers==0.42.1 importlib_metadata==10.2.0 faiss-cpu==1.15.1 mlxtend==0.25.0 rbloom==1.5.4; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl "$p" || exit 1
    done
    exit 0
fi
R=${R:-16} N=${N:-256} STEPS=${STEPS:-50} DEVICE=${DEVICE:-cuda} CLASSES=${CLASSES:-"7 3 1"}
BUDGET=${BUDGET:-570} OUT=${OUT:?OUT: the folder whose files come back} WORK=${WORK:-/tmp/keep_gpu} PY=${PY:-python3}
METHODS=(novelty novelty:memory=fresh novelty:memory=unrelated repel:radius=0.8)
if [ -d .whl ] && [ "$PY" = python3 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
NB=("$PY" -m noveltynets.cli)
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; "$PY" -c \
  'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; nproc --all; } > "$OUT/device.txt" 2>&1
timeout 150 "${NB[@]}" bench --keep 2 --n 16 --steps 5 --classes 7 -m novelty -m repel:radius=0.8 --device "$DEVICE" \
    --out "$WORK/smoke" --no-progress > "$WORK/smoke.log" 2>&1
rc=$?
echo "smoke: rc $rc, $(( $(date +%s) - t0 )) s since the start" | tee -a "$OUT/device.txt"
if [ $rc -ne 0 ]; then tail -40 "$WORK/smoke.log" | tee -a "$OUT/device.txt"; exit 1; fi
LIMIT=$(( BUDGET - ($(date +%s) - t0) - 20 ))  # what the call's time leaves, less the wrap-up
for C in $CLASSES; do
    for i in "${!METHODS[@]}"; do
        timeout "$LIMIT" "${NB[@]}" bench --keep "$R" --n "$N" --steps "$STEPS" --classes "$C" -m "${METHODS[$i]}" \
            --device "$DEVICE" --out "$WORK/c${C}_m$i" --no-progress > "$WORK/c${C}_m$i.log" 2>&1 &
    done
done
wait
echo "main: $(( $(date +%s) - t0 )) s since the start" >> "$OUT/device.txt"
cat "$WORK"/c*_m*/rows.jsonl > "$OUT/rows.jsonl" 2>/dev/null
for f in "$WORK"/c*_m*.log; do echo "== $f"; tail -5 "$f"; done > "$OUT/logs.txt"
"$PY" docs/benchmarks/keep/tables.py "$OUT/rows.jsonl" > "$OUT/tables.md" 2>> "$OUT/logs.txt"
grep -c . "$OUT/rows.jsonl"
