#!/usr/bin/env bash
# The GPU benchmark in one go, for a lent H100/H200 (JAX and torch with CUDA installed, no
# internet). From the repository root:
#
#     OUT=/some/dir bash benchmarks/gpu_run.sh      # default OUT: benchmarks/results/gpu
#
# Each step is time-boxed twice: --time-limit makes `python -m benchmarks` start no new model
# after that many seconds (the rest are recorded as skipped, and the table, JSON, Markdown and
# PNG are still written), and `timeout` kills a step that overruns anyway (its JSON is
# rewritten after every model, so the records so far survive). The limits add up to 9 min:
#
#   preflight      15 s  versions, nvidia-smi, the devices JAX and torch see
#   gpu_float32   170 s  every model ($FIRST first), forward and train: JAX vs eager torch
#                        (new models start until 120 s)
#   gpu_bfloat16  100 s  the same in bfloat16, both sides cast (until 65 s)
#   gpu_rewrite    60 s  $LOWERING_MODELS in float32 with the CPU's rewrites of transposed and
#                        grouped convolutions (--lowering rewrite), to set beside gpu_float32's
#                        XLA ops (until 40 s)
#   gpu_compile   150 s  $COMPILE_MODELS in float32, in that order, adding torch.compile,
#                        whose compilation takes tens of seconds per model (until 100 s)
#   qrnn_vs_lstm   45 s  python -m benchmarks.qrnn_vs_lstm --quick
#
# Models a step did not reach are in its table as "skipped: --time-limit"; with more device
# time, rerun that step alone with a larger --time-limit.
#
# float32 runs at `highest` precision on both sides (true float32 products: JAX highest,
# torch allow_tf32=False); bfloat16 with both libraries' defaults (float32 accumulation).
# Every step's output goes to $OUT/<step>.log; this script's summary to $OUT/gpu_run.log.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
PY="${PYTHON:-python}"
# one model per family first, so that a step cut short by its time limit still covers each
FIRST="mlp,lstm,qrnn,conv1d,vae,alexnet,resnet18,googlenet,densenet121,unet,dcgan_generator,segan_generator,embedding"
COMPILE_MODELS="${COMPILE_MODELS:-mlp,lstm,qrnn,vae,conv1d,resnet18,alexnet,unet,resnet_bottleneck,dcgan_generator,googlenet,densenet121}"
# the models whose layers have a CPU rewrite in flax_arch/nn/lowering.py (transposed and
# grouped convolutions, max-pools)
LOWERING_MODELS="${LOWERING_MODELS:-conv_transpose1d,up_conv1d_block,segan_generator,dcgan_generator,resnext,resnet18}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the card
STAMP="$(date -u +%Y-%m-%d)"
: > "$OUT/gpu_run.log"

step() {  # step NAME SECONDS COMMAND...: time-boxed and logged; a failure does not stop the rest
  local name="$1" seconds="$2" t0=$SECONDS rc
  shift 2
  echo "=== $name (at most ${seconds}s): $*" | tee -a "$OUT/gpu_run.log"
  timeout --kill-after=5 "$seconds" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$OUT/gpu_run.log"
}

bench() {  # bench NAME SECONDS LIMIT ARGS...: python -m benchmarks, no new model after LIMIT s,
           # writing $OUT/NAME_DATE.{json,md,png}
  local name="$1" seconds="$2" limit="$3"
  shift 3
  step "$name" "$seconds" "$PY" -m benchmarks --budget 2 --time-limit "$limit" \
    --json "$OUT/${name}_$STAMP.json" --markdown "$OUT/${name}_$STAMP.md" \
    --plot "$OUT/${name}_$STAMP.png" "$@"
}

step preflight 15 "$PY" -c '
import importlib
for m in ("jax", "jaxlib", "flax", "optax", "torch", "numpy", "tqdm", "matplotlib"):
    try:
        print(m, importlib.import_module(m).__version__)
    except ImportError as err:
        print("MISSING", m, err)
import jax, torch
print("jax devices", jax.devices())
print("torch cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
'
cat "$OUT/preflight.log"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

REST="$("$PY" -m benchmarks --list 2>/dev/null | awk '{print $1}' | grep -vxF "$(tr , '\n' <<< "$FIRST")" | paste -sd, -)"
ALL="$FIRST${REST:+,$REST}"
bench gpu_float32 170 120 --models "$ALL" --dtype float32
bench gpu_bfloat16 100 65 --models "$ALL" --dtype bfloat16
bench gpu_rewrite 60 40 --models "$LOWERING_MODELS" --dtype float32 --lowering rewrite
bench gpu_compile 150 100 --models "$COMPILE_MODELS" --dtype float32 --torch-compile

step qrnn_vs_lstm 45 "$PY" -m benchmarks.qrnn_vs_lstm --quick --device gpu --out "$OUT"
for name in gpu_float32 gpu_bfloat16 gpu_rewrite gpu_compile; do
  tail -n 4 "$OUT/$name.log" | tee -a "$OUT/gpu_run.log"
done
ls -l "$OUT"
