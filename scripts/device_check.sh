#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md (issue O) in one call on a GPU machine, about 8 minutes on an H100;
# every step has its own time limit and writes its own JSON under $OUT, so a step that runs over loses only itself.
#
#   bash scripts/device_check.sh prepare    # once, on a machine with PyPI: the pure-Python wheels the GPU image lacks
#                                           # (monai, pytorch-ignite, nibabel, pydicom) into .whl/ (ignored by git)
#   bash scripts/device_check.sh run        # on the GPU machine; the device tool: command
#                                           # "bash scripts/device_check.sh run", carry [".whl"], timeout_s 540
#
# What it writes under $OUT (default ./device_out):
#   device_smoke.json        host syncs per training iteration (set_sync_debug_mode), MinibatchStdDev without syncs,
#                            fp16 step repeated after an injected OOM, the 32-bit index error of 3D upsampling
#   bench_training_64.json   trainer (fp32, bf16, +checkpointing) against a plain fp32 loop, 64^3, batch 8
#   bench_training_128.json  the same at 128^3, batch 2
#   bench_planner_64.json    planner micro-batch against the bisection-found largest batch, 64^3 (fp32, bf16, +ckpt)
#   bench_planner_128.json   the same at 128^3
#   device_check.log         everything printed, with each step's exit code and times
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(monai==1.6.1 pytorch-ignite==0.5.5 nibabel==5.4.2 pydicom==3.0.2)

case "${1:-run}" in
prepare)
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    ;;
run)
    OUT=${OUT:-device_out}
    mkdir -p "$OUT"
    log="$OUT/device_check.log"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >>"$log" 2>&1 || { echo "wheels missing: run 'bash scripts/device_check.sh prepare' first" | tee -a "$log"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    { nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } >>"$log" 2>&1

    step() {  # step NAME SECONDS COMMAND...
        local name=$1 limit=$2
        shift 2
        echo "== $name: start $(date -u +%T)" >>"$log"
        timeout "$limit" "$@" >>"$log" 2>&1
        echo "== $name: exit $? at $(date -u +%T)" | tee -a "$log"
    }
    bench=(python3 scripts/bench_training.py --device cuda)
    step smoke 80 python3 scripts/device_smoke.py --out "$OUT/device_smoke.json"
    step throughput_64 100 "${bench[@]}" --size 64 --batch 8 --iterations 3 --repeats 3 --planner-sizes "" \
        --out "$OUT/bench_training_64.json"
    step throughput_128 80 "${bench[@]}" --size 128 --batch 2 --iterations 2 --repeats 2 --planner-sizes "" \
        --out "$OUT/bench_training_128.json"
    step planner_64 100 "${bench[@]}" --no-throughput --planner-sizes 64 --out "$OUT/bench_planner_64.json"
    step planner_128 100 "${bench[@]}" --no-throughput --planner-sizes 128 --out "$OUT/bench_planner_128.json"
    grep -v "^repeat " "$log" | tail -n 80
    ;;
*)
    echo "usage: bash scripts/device_check.sh prepare|run" >&2
    exit 2
    ;;
esac
