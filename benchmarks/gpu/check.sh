#!/usr/bin/env bash
# Issue 15's GPU check as one command (at most ~9 minutes: each step has its own time limit, so a
# slow or failing step leaves the others' results; run it with the device tool's timeout_s=590):
#   1. the machine, JAX's devices and the convolution implementation `auto` picks there;
#   2. the whole cifar_softhebb4 pipeline on a generated 50k / 10k CIFAR-10 archive
#      (bench_pipeline.py: per-phase seconds, unsupervised img/s), features at batch 1000;
#   3. bench_softhebb4's unsupervised and feature phases with XLA's convolution, with patches,
#      and with bfloat16 products;
#   4. the suite's tests that run on the accelerator (rules, networks, bfloat16 products,
#      checkpoints: bit-for-bit resume).
#
# On a GPU machine without Hydra / tensorflow-datasets, first run `bash benchmarks/gpu/wheels.sh`
# here and carry `.whl`; this script installs them into /tmp/site.
#
#   bash benchmarks/gpu/check.sh OUTDIR      # default: $OUT, else gpu_out/
#   SMOKE=1 bash benchmarks/gpu/check.sh /tmp/gpu_smoke   # tiny sizes: checks the script anywhere (~6 min on a 2-core CPU)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-gpu_out}}
mkdir -p "$out"
py=${PYTHON:-python3}
if ! "$py" -c "import hydra, tensorflow_datasets" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HEBBJAX_COMPILATION_CACHE= TF_CPP_MIN_LOG_LEVEL=2
stamp() { echo "=== $* $(date -u +%H:%M:%S)"; }
tests=(tests/test_rules_*.py tests/test_network.py tests/test_matmul_dtype.py tests/test_miconi.py tests/test_reward.py
       tests/test_readme_example.py tests/test_checkpoints.py)
bench=(--images 5000 --batches 10,100 --feature-images 10000 --eval-batch 1000 --repeats 3)
pipeline=(training.eval_batch_size=1000)
if [[ ${SMOKE:-0} == 1 ]]; then
  tests=(tests/test_matmul_dtype.py)
  bench=(--images 100 --batches 10 --feature-images 100 --eval-batch 20 --repeats 1)
  pipeline=(--train 500 --test 100 training.eval_batch_size=100 training.readout_epochs=2)
fi

{
  stamp machine
  git rev-parse HEAD 2>/dev/null; nvidia-smi 2>&1 | head -15; nproc
  "$py" - <<'PY'
import jax, jax.numpy as jnp
from hebbjax.run import compose_config, machine, package_versions
from hebbjax.rules.linear import Conv
print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())
print("packages", package_versions(), "host", machine())
cfg = compose_config("+experiment=cifar_softhebb4")
cin = 3
for i, b in enumerate(cfg.model.blocks):
    kernel = jnp.zeros((b.kernel, b.kernel, cin // b.groups, b.channels))
    conv = Conv(implementation=b.implementation)
    print(f"block {i}: implementation={b.implementation} -> forward by", "patches" if conv._patches_forward(kernel) else "XLA's convolution")
    cin = b.channels
PY
} > "$out/machine.txt" 2>&1

stamp pipeline > "$out/pipeline.txt"
rm -rf /tmp/hebbjax_pipeline
timeout 200 "$py" benchmarks/bench_pipeline.py --workdir /tmp/hebbjax_pipeline "${pipeline[@]}" >> "$out/pipeline.txt" 2>&1
echo "exit $?" >> "$out/pipeline.txt"
find /tmp/hebbjax_pipeline -name results.json -exec cp {} "$out/pipeline_results.json" \; 2>/dev/null

blocks() { for i in 0 1 2; do echo "model.blocks.$i.implementation=$1"; done; }
: > "$out/softhebb4.txt"
for run in "xla" "patches" "xla model.matmul_dtype=bfloat16"; do
  set -- $run
  stamp "bench_softhebb4 $run" >> "$out/softhebb4.txt"
  timeout 70 "$py" benchmarks/bench_softhebb4.py "${bench[@]}" --phases unsupervised,features $(blocks "$1") "${@:2}" \
    >> "$out/softhebb4.txt" 2>&1
  echo "exit $?" >> "$out/softhebb4.txt"
done

stamp tests > "$out/tests.txt"
timeout 150 "$py" -m pytest -v -p no:cacheprovider "${tests[@]}" >> "$out/tests.txt" 2>&1
echo "exit $?" >> "$out/tests.txt"
stamp done >> "$out/tests.txt"
