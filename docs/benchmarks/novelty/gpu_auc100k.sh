#!/usr/bin/env bash
# Seen AUC at 100,000 observed samples on the device (the second device call of 2026-11-26; the first,
# gpu_run.sh, measured 1k and 10k but cached only the 11,256 embeddings those need).
#   OUT=dir bash docs/benchmarks/novelty/gpu_auc100k.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
timeout "${LIMIT:-330}" python3 benchmarks/novelty_nets.py auc --device "${DEV:-cuda}" --classes 7 --steps 15 --histories ${H:-100000} \
  --n-test ${NTEST:-1000} --pool ${POOL:-256} --observe-chunk 256 --sample-batch 4096 --out "$OUT" 2>&1 | grep -v Assertion | tee "$OUT/auc100k.log"
