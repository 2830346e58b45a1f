cd /work/main
# The smooth head (what guidance follows) at 10^4 samples of gmm64: is it its targets (distances to 4,096 replay rows)
# or the net that stops it recalling near-duplicates? 2026-12-07, two processes of one thread each, about 12 min.
run() { OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python -W ignore -c "
import sys
from benchmarks import capacity as c
c.MEMORIES.update({'t4k': {'codes_capacity': 1000000, 'hidden': 192, 'replay_size': 10000},
                   't10k': {'codes_capacity': 1000000, 'hidden': 192, 'replay_size': 10000, 'target_rows': 10000},
                   't10k512': {'codes_capacity': 1000000, 'hidden': 512, 'replay_size': 10000, 'target_rows': 10000},
                   't10kq': {'codes_capacity': 1000000, 'hidden': 512, 'replay_size': 10000, 'target_rows': 10000, 'query_rows': 8192}})
c.main(['--source', 'gmm64', '--memories', *sys.argv[1:], '--max-history', '10000', '--checkpoints', '1000', '10000', '--faiss-max', '0', '--out', '/tmp/smooth_targets/' + sys.argv[1]])
" "$@" ; }
run t4k t10k > docs/benchmarks/capacity/smooth_targets_a.log 2>&1 &
run t10k512 t10kq > docs/benchmarks/capacity/smooth_targets_b.log 2>&1 &
wait
