#!/usr/bin/env bash
# Wall time of the main job as a user runs it: plain sampling vs the first novelty run of a new memory (reference
# included) vs a later run of the same memory, 128 samples of class 7, 50 steps, batch 16, interleaved, idle 2-core CPU.
#   [REPS=3] bash docs/benchmarks/keep/first_use_cost.sh > docs/benchmarks/keep/first_use_cost.log
set -euo pipefail
NN=${NN:-.venv/bin/noveltynets}
W=$(mktemp -d)
for rep in $(seq 1 "${REPS:-3}"); do
  for job in plain first later; do
    case $job in
      plain) args=(--seeds 0-127) ;;
      first) rm -f "$W/s.sqlite"; args=(--seeds 0-127 --guide novelty --memory m --store "$W/s.sqlite") ;;
      later) args=(--seeds 128-255 --guide novelty --memory m --store "$W/s.sqlite") ;;
    esac
    t0=$(date +%s.%N)
    $NN sample --class 7 --n 128 "${args[@]}" --out "$W/o" --overwrite --no-progress > "$W/msg"
    t1=$(date +%s.%N)
    echo "rep=$rep job=$job wall_s=$(echo "$t1 - $t0" | bc) sampling_s=$(python3 -c "import json;print(json.load(open('$W/o/manifest.json'))['timings']['sampling_s'])")"
  done
done
rm -rf "$W"
