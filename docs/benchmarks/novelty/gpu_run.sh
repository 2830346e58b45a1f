#!/usr/bin/env bash
# The novelty benchmark's GPU runs (one device call): seen AUC at 1k/10k/100k observed samples with
# the default embedder, and the full protocol for classes 1, 3 and 7 at the default (memory_weight
# 0.2), plus first runs at memory_weight 0.25. Jobs run side by side, each under its own time limit;
# rows are written as they come, so a job cut off still leaves its finished rows; everything ends up
# in one archive, $OUT/novelty_gpu.tgz (the device tool brings back at most 8 files).
#   DEV=cuda OUT=dir bash docs/benchmarks/novelty/gpu_run.sh        (what was run on the device)
#   DEV=cpu QUICK=1 OUT=/tmp/x bash docs/benchmarks/novelty/gpu_run.sh   (a dry run of the same commands)
set -u
DEV=${DEV:-cuda}; DEST=${OUT:?OUT must name a folder}; LIMIT=${LIMIT:-420}
OUT=$(mktemp -d)
N=256; STEPS=50; HN=(1000 10000); HBIG=100000; NTEST=1000; POOL=256; SB=2048
if [ -n "${QUICK:-}" ]; then N=32; STEPS=4; HN=(64 128); HBIG=256; NTEST=32; POOL=32; SB=64; fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
mkdir -p "$OUT"
B="$PY benchmarks/novelty_nets.py"
$PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" | tee "$OUT/env.log"
# seen AUC: 15-step samples of class 7 (as the CPU rows), observed 16 at a time up to 10k, 128 at a time at 100k
( timeout "$LIMIT" $B auc --device "$DEV" --classes 7 --steps 15 --histories "${HN[@]}" --n-test $NTEST --pool $POOL \
    --sample-batch $SB --embeddings /tmp/emb7_15steps_p32.pt --out "$OUT/auc_small" \
  && timeout "$LIMIT" $B auc --device "$DEV" --classes 7 --steps 15 --histories $HBIG --n-test $NTEST --pool $POOL \
    --observe-chunk 128 --embeddings /tmp/emb7_15steps_p32.pt --out "$OUT/auc_big" ) > "$OUT/auc.log" 2>&1 &
for c in 1 3 7; do
  timeout "$LIMIT" $B protocol --device "$DEV" --classes $c --n $N --steps $STEPS --out "$OUT/protocol_c$c" > "$OUT/protocol_c$c.log" 2>&1 &
  timeout "$LIMIT" $B protocol --device "$DEV" --classes $c --n $N --steps $STEPS --no-ablations \
    --term-config '{"memory_weight": 0.25}' --out "$OUT/mw025_c$c" > "$OUT/mw025_c$c.log" 2>&1 &
done
wait
tail -n 3 "$OUT"/*.log
mkdir -p "$DEST" && tar czf "$DEST/novelty_gpu.tgz" -C "$OUT" .
