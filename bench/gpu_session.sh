#!/usr/bin/env bash
# Every GPU figure the open issues owe (5: sequence models, 6: equation model), in ONE device call.
#
# A session that is lent a GPU has 15 minutes of device time, start-up included, and 10 minutes a command:
# so everything is prepared here, runs there in one go under per-step time caps, and comes back in $OUT.
#
#   here:   bash bench/gpu_session.sh prepare [INGESTDIR TOPICDIR]   # -> data/gpu-bundle (~10 MB)
#   there:  device run, carry ["data/gpu-bundle"], timeout_s 590:  bash bench/gpu_session.sh run
#   here:   bash bench/gpu_session.sh check FILES_AT                 # compile-check what came back
#
# What `run` measures, each step capped so that the rest still runs when one is slow:
#   1. issue 5 speed: bench/train_bench.py, our step vs a bare nn.LSTM step (batch 256 fp32; 1024 bf16),
#      and bench/sample_bench.py (batched sampler vs a bare loop)                                 ~1 min
#   2. issue 5 quality: `topiceq train --preset shakespeare-lstm` on Tiny Shakespeare (nanoGPT split),
#      best validation nats/char (goal <= 1.45), the loss curve and three samples primed with "Q" ~3 min
#   3. issue 6: bench/gpu_check.py run: eq-lstm 2 x 512 (θ joined to every input), input+bias (the best
#      CPU variant) and the plain model of equal capacity, same steps; test bits/char (also per area);
#      1,000 generated equations per model (plain, input) with and without the syntax constraint                                                             ~4.5 min
# The device image has python3 with torch, numpy, tqdm and matplotlib (no gensim): nothing is installed.
# Locally, `DEVICE=cpu QUICK=1 bash bench/gpu_session.sh run` smoke-tests the whole script in a minute.
set -u
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-data/gpu-bundle}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}

prepare() {
    local ingest=${1:-data/eq-ingest} topics=${2:-data/eq-topics}
    local py=.venv/bin/python
    [ -x "$py" ] || py=python3
    "$py" bench/gpu_check.py bundle --data "$ingest" --topics "$topics" --out "$BUNDLE" || exit 1
    cp ../shared/data/text/tinyshakespeare.txt "$BUNDLE/tinyshakespeare.txt" || exit 1  # git-ignored bundle
    du -sh "$BUNDLE"
}

run() {
    local out=${OUT:-data/gpu-session}
    mkdir -p "$out"
    export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
    local t_bench=90 t_shk=200 t_eq=290 shk_steps="" eq_args=(--budget-s 150 --n 1000 --modes none input input+bias)
    if [ "$QUICK" = 1 ]; then  # the same steps, tiny shapes: checks the script, not the GPU
        t_bench=60 t_shk=90 t_eq=200 shk_steps="--max-steps 20 --set batch_size=8 --set seq_len=64 --set eval_every=10 --set hidden=64"
        eq_args=(--preset eq-tiny --max-steps 20 --n 20 --modes none input input+bias)
    fi
    { date -u; nvidia-smi 2>&1 | head -15; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } \
        > "$out/env.txt" 2>&1
    local fp32="--batch 256 --seq 256 --hidden 512" bf16="--batch 1024 --seq 256 --hidden 512 --bf16"
    [ "$QUICK" = 1 ] && fp32="--batch 8 --seq 32 --hidden 64 --rounds 1 --steps 2" && bf16="$fp32 --bf16"
    # 1. speed (issue 5)
    # shellcheck disable=SC2086
    timeout $t_bench "$PY" bench/train_bench.py --device "$DEVICE" $fp32 > "$out/train_bench_fp32.txt" 2>&1
    echo "train_bench fp32 rc=$?" >> "$out/status.txt"
    # shellcheck disable=SC2086
    timeout $t_bench "$PY" bench/train_bench.py --device "$DEVICE" $bf16 > "$out/train_bench_bf16.txt" 2>&1
    echo "train_bench bf16 rc=$?" >> "$out/status.txt"
    local sb=""; [ "$QUICK" = 1 ] && sb="--hidden 64 --rounds 1 -n 8 --length 20"
    timeout $t_bench "$PY" bench/sample_bench.py --device "$DEVICE" $sb > "$out/sample_bench.txt" 2>&1
    echo "sample_bench rc=$?" >> "$out/status.txt"
    # 2. Shakespeare 2 x 512 (issue 5); checkpoints stay on the machine, the curve and figures come back
    local shk=/tmp/topiceq-shk
    rm -rf "$shk"
    # shellcheck disable=SC2086
    timeout $t_shk "$PY" -m topiceq.cli train --preset shakespeare-lstm --data "$BUNDLE/tinyshakespeare.txt" \
        --out "$shk" --device "$DEVICE" $shk_steps > "$out/shakespeare_train.log" 2>&1
    echo "shakespeare train rc=$? (124 = stopped at its cap; best.pt holds the best validation so far)" >> "$out/status.txt"
    cp "$shk"/*.png "$out/" 2>/dev/null
    tail -c 2000 "$out/shakespeare_train.log" | tr '\r' '\n' | tail -5 > "$out/shakespeare_summary.txt"
    timeout 60 "$PY" -m topiceq.cli sample --checkpoint "$shk" --prime Q -n 3 --length 300 --temperature 0.8 \
        --seed 0 --device "$DEVICE" > "$out/shakespeare_samples.txt" 2>&1
    # 3. equation model (issue 6)
    timeout $t_eq "$PY" bench/gpu_check.py run --bundle "$BUNDLE" --out "$out/eq" --device "$DEVICE" "${eq_args[@]}" \
        > "$out/gpu_check.log" 2>&1
    echo "gpu_check rc=$?" >> "$out/status.txt"
    cat "$out/status.txt"
}

check() {
    local back=${1:?give the files_at folder of the device call}
    local py=.venv/bin/python
    [ -x "$py" ] || py=python3
    for f in train_bench_fp32.txt train_bench_bf16.txt sample_bench.txt shakespeare_summary.txt status.txt; do
        echo "== $f"; cat "$back/$f" 2>/dev/null || find "$back" -name "$f" -exec cat {} \;
    done
    local gen
    gen=$(find "$back" -name generated.jsonl | head -1)
    [ -n "$gen" ] && "$py" bench/gpu_check.py check --generated "$gen"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) run ;;
    check) shift; check "$@" ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
esac
