#!/usr/bin/env bash
# Is the project ready for a GPU? One pass, under 8 minutes on one H200 with 16 cores, that prints:
#   (a) the machine: nvidia-smi, torch, CUDA and cuDNN versions;
#   (b) full-scale ActNetFormer epochs in-process (trainable.loop.run with a LocalSession on the GPU, no Ray;
#       run_local has no device) on the synthetic dataset rendered at 224 pixels: steps/s, clips/s, peak GPU
#       memory; two epochs, the second without the first's warm-up;
#   (c) bench/step.py at the same scale: the step against bare forward + backward passes;
#   (d) bench/loader.py (its defaults, with --cuda-decode), PyAV's and torchcodec's rates side by side, torchcodec's
#       decoding on the GPU (NVDEC) where its FFmpeg has it, and each decoder's items/s x loader workers against
#       what the GPU consumes. torchcodec needs the .[torchcodec] extra and the system's FFmpeg libraries (README).
#   (e) a trial's Ray Train run on one GPU worker, through the trials' own trainer (search.backend.trial_trainer):
#       the process group's backend (nccl with a GPU, gloo on the CPU), the worker's device, an all-reduce on it.
# Installs nothing: it runs the project's .venv (or python3, saying so). Every part runs under `timeout`.
#
#   bash bench/gpu_check.sh                   # on the GPU machine
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh   # the same commands at tiny scale on the CPU: checks the script
set -uo pipefail
cd "$(dirname "$0")/.."

# The full-scale settings, in one place: the paper's pair (resnet3d_50 + timesformer_s), clips (8 frames of
# 224 pixels) and per-GPU batch (1 labeled + 5 unlabeled clips; TrainConfig's defaults, docs/method.md §1), in bf16
# with channels_last, as a GPU trial runs them.
export SCALE=full DEVICE=cuda PRECISION=bf16 FRAMES=8 SIZE=224 BATCH=1 MU=5
export EPOCH_STEPS=200    # steps of each of (b)'s two epochs
export LOADER_WORKERS=12  # of the 16 cores; the training process keeps the rest
STEP_STEPS=20             # timed steps of (c), after 3 untimed
LOADER_ARGS=(--cuda-decode)  # bench/loader.py's defaults, and torchcodec on the GPU
if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then  # scale tiny also sets 32-pixel, 8-frame, fp32 clips and 0 workers
    export SCALE=tiny DEVICE=cpu PRECISION=fp32 SIZE=32 EPOCH_STEPS=2 LOADER_WORKERS=0
    STEP_STEPS=2 LOADER_ARGS=(--items 2)
fi

PY=.venv/bin/python
if [[ ! -x "$PY" ]]; then
    echo "!! no .venv in $(pwd): falling back to python3, which needs the project's packages installed"
    PY=python3
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
section() { printf '\n=== %s\n' "$*"; }
status() { [[ $1 == 124 ]] && echo "!! timed out" || { [[ $1 != 0 ]] && echo "!! failed (exit $1)"; }; }

section "(a) machine"
timeout 20 nvidia-smi || echo "!! nvidia-smi not available"
timeout 30 "$PY" -c '
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "none", "cpus", torch.get_num_threads())'
status $?

section "(b) ActNetFormer epochs: $SCALE scale, ${FRAMES}x${SIZE}px, $PRECISION, batch $BATCH+$((MU * BATCH)), $LOADER_WORKERS loader workers, $DEVICE"
timeout 210 "$PY" - <<'EOF' | tee "$OUT/epoch.txt"
import os
import torch
from trainable.config import TrainConfig
from trainable.loop import run
from trainable.session import LocalSession

env = os.environ
size, device = int(env["SIZE"]), env["DEVICE"]
config = {
    "method": "actnetformer", "primary_backbone": "resnet3d_50", "aux_backbone": "timesformer_s", "scale": env["SCALE"],
    "primary_frames": int(env["FRAMES"]), "aux_frames": int(env["FRAMES"]), "input_size": size,
    "batch_size": int(env["BATCH"]), "mu": int(env["MU"]), "precision": env["PRECISION"], "channels_last": True,
    # Rendered at the input size, 64 frames (the primary's 8 x 8 span fits), few videos: rendered in about a minute.
    "synthetic_size": size, "synthetic_frames": 64, "synthetic_classes": 10,
    "synthetic_train_per_class": 4, "synthetic_test_per_class": 1, "labeled_per_class": 1,
    "epochs": 2, "steps_per_epoch": int(env["EPOCH_STEPS"]),
    "loader_workers": int(env["LOADER_WORKERS"]), "pin_memory": device == "cuda",
}
clips_per_step = config["batch_size"] * (1 + config["mu"])


def report(metrics):  # each epoch as it ends, so a timeout in the second still leaves the first
    memory = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else "n/a (CPU)"
    steps_per_s = metrics["clips_per_s"] / clips_per_step
    print(f"epoch {metrics['epoch']}: {steps_per_s:.2f} steps/s, {metrics['clips_per_s']:.1f} clips/s (training; "
          f"the loader's start included), {metrics['epoch_time_s']:.1f} s with the test, loss {metrics['loss']:.3f}, "
          f"max_memory_allocated {memory}")
    print(f"epoch_steps_per_s {steps_per_s:.4f}", flush=True)


run(TrainConfig.parse(config), LocalSession(on_report=report, device=device))
EOF
status "${PIPESTATUS[0]}"

section "(c) step vs bare forward + backward: bench/step.py"
BF16=(); [[ $PRECISION == bf16 ]] && BF16=(--bf16)
timeout 100 "$PY" bench/step.py --scale "$SCALE" --device "$DEVICE" "${BF16[@]}" --frames "$FRAMES" --size "$SIZE" \
    --batch "$BATCH" --mu "$MU" --steps "$STEP_STEPS" --warmup 3 | tee "$OUT/step.txt"
status "${PIPESTATUS[0]}"

section "(d) loader: bench/loader.py against the GPU's need"
timeout 180 "$PY" bench/loader.py "${LOADER_ARGS[@]}" | tee "$OUT/loader.txt"
status "${PIPESTATUS[0]}"
# The GPU's need from (c)'s step time (the step alone, no loader); (b)'s rate, for comparison, is what the
# loader actually delivered. items/s is loader.py's column 5 from the right of each video's row, its decoder 8.
step_ms=$(awk '$1 == "ratio" {print $4}' "$OUT/step.txt")
epoch_rate=$(awk '$1 == "epoch_steps_per_s" {rate = $2} END {print rate}' "$OUT/epoch.txt")
awk -v step_ms="${step_ms:-0}" -v epoch_rate="${epoch_rate:-0}" -v workers="$LOADER_WORKERS" -v items="$((BATCH * (1 + MU)))" '
    BEGIN { need = step_ms > 0 ? 1000 / step_ms * items : 0
            printf "GPU need: %.1f items/s (%d items per %.0f ms step, from (c)); (b) delivered %.1f items/s\n",
                   need, items, step_ms, epoch_rate * items }
    $NF ~ /^[0-9.]+x$/ { per_core = $(NF - 5); supply = per_core * workers
        printf "%-14s %-10s loader %.2f items/s x %d workers = %.1f items/s: %s; %d workers keep up\n", $1, $(NF - 8), per_core, workers,
               supply, (supply >= need ? "keeps up" : "the GPU waits"), (per_core > 0 ? int(need / per_core) + 1 : 0) }
' "$OUT/loader.txt"

section "(e) a trial's Train run on $DEVICE: search.backend.trial_trainer"
timeout 150 "$PY" - <<'EOF'
import os
import tempfile

import ray.train

from search.backend import trial_trainer
from search.runner import start_local_ray


def probe(config: dict) -> None:
    import ray.train.torch
    import torch
    import torch.distributed as dist

    device = ray.train.torch.get_device()
    total = torch.ones(1, device=device)
    dist.all_reduce(total)
    current = torch.cuda.current_device() if device.type == "cuda" else "cpu"
    print(f"process group {dist.get_backend()}, device {device} (current {current}), all_reduce {total.item():.0f} of 1 worker", flush=True)


use_gpu = os.environ["DEVICE"] == "cuda"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
start_local_ray(log_to_driver=True)
with tempfile.TemporaryDirectory() as storage:
    result = trial_trainer(
        probe,
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(name="gpu-check", storage_path=storage),
    ).fit()
print("train run", "ok" if result.error is None else f"failed: {result.error}")
EOF
status $?
