#!/bin/bash
# The GPU check, run from the repository root on a CUDA machine with no network:
#   1. the tiny-model engine, guard and attack tests with the models on the GPU (SASA_TEST_DEVICE=cuda);
#   2. `sasa bench` at the published shapes (random weights, bfloat16) of the four real configurations.
# Optional wheels in .whl/ (transformers and its hub stack, gguf) are installed to /tmp/site first; the
# machine's own packages are used where they fail to import. Outputs go to $OUT (default ./gpu-out).
set -o pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/machine.txt"
SITE=""
if ls .whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
   && PYTHONPATH=/tmp/site python3 -c "import transformers.models.llava" 2>/dev/null; then SITE=/tmp/site; fi
export PYTHONPATH=${SITE:+$SITE:}$PWD/src
python3 -c "import torch, transformers, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/machine.txt"
SASA_TEST_DEVICE=cuda timeout ${TEST_S:-200} python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_engine.py tests/test_guard.py tests/test_attack.py -rf 2>&1 | tee "$OUT/cuda-tests.log" | tail -40
timeout ${BENCH_S:-330} python3 -m sasa.cli bench --config all --random-weights --size full --dtype bfloat16 --device cuda --repeats ${REPEATS:-5} --out "$OUT/bench-full.json" 2>&1 | tee "$OUT/bench.log" | grep -v "it/s\|%|" | tail -80
