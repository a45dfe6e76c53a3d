#!/usr/bin/env bash
# Run scripts/sweep.py on a JAX-only GPU machine, one process per line of GRID_FILE (sweep.py arguments) sharing
# the GPU. Wheels for keras, namex and optree (cp312) must be in .whl/ (pip download).
# Usage there: bash scripts/sweep_device.sh GRID_FILE   (results in $OUT/results.jsonl)
# hyper-parameter sweep on one H200 (JAX backend), several processes sharing the GPU
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 DELTANET_CACHE=/tmp/dncache TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
start=$(date +%s)
python3 -c "from training.synthetic import make_embedded_dataset; print(make_embedded_dataset(progress=False))" || exit 1
echo "embedded dataset: $(( $(date +%s) - start )) s"
i=0
while read -r line; do
  i=$((i+1)); line=${line//\$OUT/$OUT}
  timeout $(( ${LIMIT:-540} - ($(date +%s) - start) )) python3 scripts/sweep.py --json $OUT/part$i.jsonl $line > $OUT/log$i.txt 2>&1 &
done < "$1"
wait
cat $OUT/part*.jsonl > $OUT/results.jsonl 2>/dev/null; rm -f $OUT/part*.jsonl
for f in $OUT/log*.txt; do echo "== $f"; grep -v "^WARNING\|^I0000\|^W0000\|^E0000" $f | tail -3; done
rm -f $OUT/log*.txt
echo "total $(( $(date +%s) - start )) s"
