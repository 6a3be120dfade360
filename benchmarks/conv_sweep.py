"""Convolution shapes of the registry's and the zoo's image models: jit-compiled XLA against
eager PyTorch, forward, input gradient and weight gradient, one shape at a time.

The shapes are those of ResNet-18/34's basic blocks, ResNet-50's bottlenecks, VGG's,
DenseNet's and ResNeXt's (grouped 3x3) layers at the map sizes that 32x32, 64x64 and 224x224
inputs reach (1x1 to 56x56), 3x3 and 1x1 kernels, stride 1 and 2, channels 64 to 512 (up to
2048 for the bottleneck's 1x1), batch 1, 8 and 32 (maps above 8x8 at batch 8 only); float32,
channels-last in JAX and NCHW in torch (each side's native layout).

Three runs per shape and pass, each timed alone in its own steady state (never interleaved
sample by sample: torch's OpenMP workers spin after each torch call and slow the XLA call
that follows): ~0.3 s of untimed warm-up, then the median of 5 blocks of ~0.05 s each.

* ``xla``: ``lax.conv_general_dilated`` itself, XLA's own convolution (the form before
  :func:`flax_arch.nn.lowering.conv`);
* ``lowered``: :func:`flax_arch.nn.lowering.grouped_conv` as ``nn.Conv2d`` calls it, the
  CPU's form where the lowering rewrites the shape (``rewritten``, ``*`` in the table), XLA's
  convolution elsewhere;
* ``torch``: ``torch.nn.functional.conv2d`` eagerly (forward under ``no_grad``; the gradients
  by ``torch.autograd.grad`` of the output's sum, each of one operand alone).

The ratio is torch's time / ours (above 1: XLA faster). XLA runs with
the settings of :func:`benchmarks.configure_process`, as ``python -m benchmarks`` does.

``--models`` times whole models instead: ResNet-18 (flax_arch's ``resnet18`` and
torchvision's ported by :func:`flax_arch.port`) at batch 8 on 32x32 and 64x64 inputs, and
SEGAN's ``DownConv1dBlock(1, 1, 31, 4)`` at its registry quick size, against torchvision's and
torch_ref's eagerly: forward (eval mode) and a training step (train mode, cross-entropy or
mean-squared error, gradients, plain SGD at lr 0.01; JAX's step is one jitted function of the
parameters and BatchNorm statistics it returns), each ``before`` (the lowering without its
small-map and one-channel rewrites: every plain convolution XLA's own) and ``after``.

    python -m benchmarks.conv_sweep            # every shape
    python -m benchmarks.conv_sweep --quick    # batch 8 only
    python -m benchmarks.conv_sweep --models   # ResNet-18 and the SEGAN block, before/after

Writes ``conv_sweep_<device>.md`` and ``.json`` (``conv_sweep_models_<device>.*``) under
``--out`` (default ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import flax_arch
from . import configure_process

configure_process()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import optax  # noqa: E402
import torchvision  # noqa: E402
import torch_ref  # noqa: E402
from flax import nnx  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks.device import detect  # noqa: E402
from flax_arch.nn import lowering  # noqa: E402

# (in, out, kernel, stride, map sizes[, groups]): the layers that meet small maps
LAYERS = [
    # ResNet-18/34 basic blocks and VGG: 3x3 stride 1
    (64, 64, 3, 1, (8, 16, 56)),
    (128, 128, 3, 1, (4, 8, 28)),
    (256, 256, 3, 1, (1, 2, 3, 4, 14)),
    (512, 512, 3, 1, (1, 2, 3, 4, 7)),
    # the first block of a stage: 3x3 stride 2, and the 1x1 stride-2 shortcut
    (64, 128, 3, 2, (8, 16)),
    (128, 256, 3, 2, (4, 8)),
    (256, 512, 3, 2, (2, 4, 14)),
    (256, 512, 1, 2, (2, 4)),
    # ResNet-50's bottleneck: 1x1 in and out around the 3x3
    (1024, 256, 1, 1, (1, 2)),
    (256, 1024, 1, 1, (1, 2)),
    (2048, 512, 1, 1, (1,)),
    (512, 2048, 1, 1, (1,)),
    # DenseNet's dense layer: 1x1 to 4 x growth, 3x3 to the growth rate
    (512, 128, 1, 1, (1, 2)),
    (128, 32, 3, 1, (1, 2, 4)),
    # ResNeXt-50 32x4d's last stage: 3x3, 32 groups
    (1024, 1024, 3, 1, (1, 2, 4), 32),
]
BATCHES = (1, 8, 32)
PASSES = ("forward", "input grad", "weight grad")
RUNS = ("xla", "lowered", "torch")
WARMUP_S, BLOCK_S, BLOCKS = 0.3, 0.05, 5
BIG_MAP = 8  # larger maps at batch 8 only


def block_ms(fn) -> list[float]:
    """The time of one call in each of BLOCKS blocks of ~BLOCK_S, after WARMUP_S of untimed
    calls."""
    start = time.perf_counter()
    while time.perf_counter() - start < WARMUP_S:
        fn()
    start = time.perf_counter()
    fn()
    reps = max(1, round(BLOCK_S / (time.perf_counter() - start)))
    blocks = []
    for _ in range(BLOCKS):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        blocks.append((time.perf_counter() - start) / reps * 1e3)
    return blocks


def steady_ms(fn) -> float:
    """The median time of one call over :func:`block_ms`'s blocks."""
    return statistics.median(block_ms(fn))


def jax_passes(conv, x, w):
    loss = lambda x, w: jnp.sum(conv(x, w))  # noqa: E731
    fns = {"forward": jax.jit(conv), "input grad": jax.jit(jax.grad(loss, 0)),
           "weight grad": jax.jit(jax.grad(loss, 1))}
    return {name: (lambda f=f: f(x, w).block_until_ready()) for name, f in fns.items()}


def torch_passes(x, w, stride, padding, groups):
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    xg, wg = xt.clone().requires_grad_(), wt.clone().requires_grad_()

    def conv(x, w):
        return torch.nn.functional.conv2d(x, w, stride=stride, padding=padding, groups=groups)

    def forward():
        with torch.no_grad():
            conv(xt, wt)

    return {"forward": forward,
            "input grad": lambda: torch.autograd.grad(conv(xg, wt).sum(), xg),
            "weight grad": lambda: torch.autograd.grad(conv(xt, wg).sum(), wg)}


def measure(batch, cin, cout, k, stride, size, groups=1) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, cin), np.float32)
    w = (rng.standard_normal((k, k, cin // groups, cout)) / np.sqrt(k * k * cin / groups)
         ).astype(np.float32)
    pad = k // 2
    geometry = dict(window_strides=(stride, stride), padding=[(pad, pad)] * 2,
                    rhs_dilation=(1, 1))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    def xla(x, w):
        return lax.conv_general_dilated(x, w, **geometry, dimension_numbers=dn,
                                        feature_group_count=groups)

    def lowered(x, w):  # as nn.Conv2d calls it
        return lowering.grouped_conv(x, w, groups, **geometry, dimension_numbers=dn)

    with lowering.forms("rewrite"):
        rewritten = "conv_general_dilated" not in str(jax.make_jaxpr(lowered)(x, w))
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    runs = {"xla": jax_passes(xla, xj, wj), "lowered": jax_passes(lowered, xj, wj),
            "torch": torch_passes(x, w, stride, pad, groups)}
    record = dict(batch=batch, cin=cin, cout=cout, groups=groups, kernel=k, stride=stride,
                  size=size,
                  out_size=(size + 2 * pad - k) // stride + 1, rewritten=rewritten)
    for p in PASSES:
        for run in RUNS:
            fn = runs[run][p]
            fn()  # compile
            record[f"{p} {run} ms"] = steady_ms(fn)
    return record


def table(records, device: str) -> str:
    lines = [f"# Convolution sweep: XLA (jit) vs eager PyTorch, {device}", "",
             f"jax {jax.__version__}, torch {torch.__version__}, python "
             f"{platform.python_version()}; XLA_FLAGS and memory settings from "
             "benchmarks.configure_process(); "
             "float32; ms per call (median of 5 blocks after 0.3 s warm-up, each run alone); "
             "ratio = torch / ours (below 1: XLA slower). `xla`: lax.conv_general_dilated; "
             "`lowered`: flax_arch.nn.lowering.grouped_conv (what nn.Conv2d runs), `*` where it "
             "rewrites the shape.", ""]
    head = "| batch | in->out | k/s | map | " + " | ".join(
        f"{p}: xla / lowered / torch (ms) | ratio xla, lowered" for p in PASSES) + " |"
    lines += [head, "|" + "---|" * (4 + 2 * len(PASSES))]
    for r in records:
        cells = [str(r["batch"]), f"{r['cin']}->{r['cout']}"
                 + (f" /{r['groups']}" if r.get("groups", 1) > 1 else ""),
                 f"{r['kernel']}/{r['stride']}",
                 f"{r['size']}->{r['out_size']}" + (" *" if r["rewritten"] else "")]
        for p in PASSES:
            x, low, t = (r[f"{p} {run} ms"] for run in RUNS)
            cells += [f"{x:.2f} / {low:.2f} / {t:.2f}", f"{t / x:.2f}x, {t / low:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", summary(records)]
    return "\n".join(lines) + "\n"


def summary(records) -> str:
    out = []
    for run in ("xla", "lowered"):
        ratios = [(r[f"{p} torch ms"] / r[f"{p} {run} ms"], p, r) for r in records
                  for p in PASSES]
        worst, p, r = min(ratios, key=lambda t: t[0])
        slow = sum(ratio < 0.5 for ratio, _, _ in ratios)
        geo = float(np.exp(np.mean(np.log([t[0] for t in ratios]))))
        out.append(f"- `{run}`: worst {worst:.3f}x ({p}, batch {r['batch']}, {r['cin']}->"
                   f"{r['cout']} k{r['kernel']} s{r['stride']} on {r['size']}x{r['size']}); "
                   f"{slow} of {len(ratios)} cases more than 2x slower than torch; geometric "
                   f"mean {geo:.2f}x")
    return "\n".join(out)


@contextlib.contextmanager
def without_conv_rewrites():
    """The lowering as it was before its small-map and one-channel rewrites of a plain
    convolution: XLA's convolution for every plain convolution."""
    saved = lowering._small_map, lowering._one_channel_strided
    lowering._small_map = lowering._one_channel_strided = lambda *args, **kwargs: False
    try:
        yield
    finally:
        lowering._small_map, lowering._one_channel_strided = saved


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def mse(y, target):
    return jnp.mean((y - target) ** 2)


def jax_runs(model: nnx.Module, x: jax.Array, target: jax.Array, loss_fn) -> dict:
    """Forward (eval) and a training step (train) of a channels-last NNX model, jitted in the
    lowering's current state."""
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    forward = jax.jit(lambda params, rest, x: nnx.merge(graphdef, params, rest, copy=True)(x))
    model.train()
    graphdef_t, _, rest_t = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def step(params, rest, x, target):
        def loss(params, rest):
            m = nnx.merge(graphdef_t, params, rest, copy=True)
            return loss_fn(m(x), target), nnx.state(m, nnx.Not(nnx.Param))

        (_, rest), grads = jax.value_and_grad(loss, has_aux=True)(params, rest)
        return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), rest

    state = [params, rest_t]

    def train():
        state[:] = step(*state, x, target)
        jax.block_until_ready(state)

    return {"forward": lambda: forward(params, rest, x).block_until_ready(), "train": train}


def torch_runs(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def train():
        model.train()
        opt.zero_grad()
        loss_fn(model(x), target).backward()
        opt.step()

    return {"forward": forward, "train": train}


def model_cases():
    """(name, input, flax builder, torch model, flax input and target, torch input and
    target, flax loss, torch loss) of each timed model."""
    rng = np.random.default_rng(0)
    for size in (32, 64):
        x = rng.standard_normal((8, 3, size, size), np.float32)
        labels = rng.integers(0, 1000, 8)
        torch.manual_seed(0)
        tv = torchvision.models.resnet18()
        flax_io = (jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(labels))
        torch_io = (torch.from_numpy(x), torch.from_numpy(labels))
        losses = (cross_entropy, torch.nn.functional.cross_entropy)
        yield ("resnet18", f"8x3x{size}x{size}", lambda: flax_arch.resnet18(rngs=nnx.Rngs(0)),
               tv, flax_io, torch_io, *losses)
        yield ("ported torchvision resnet18", f"8x3x{size}x{size}",
               lambda: flax_arch.port(tv, torch.from_numpy(x)), tv, flax_io, torch_io, *losses)
    # SEGAN's DownConv1dBlock(1, 1, 31, 4) at its registry quick size
    kw = dict(ninp=1, fmap=1, kwidth=31, stride=4)
    x = rng.standard_normal((256, 1, 4000), np.float32)
    target = rng.standard_normal((256, 1, 1000), np.float32)
    torch.manual_seed(0)
    yield ("down_conv1d_block", "256x1x4000",
           lambda: flax_arch.get_model("down_conv1d_block", rngs=nnx.Rngs(0), **kw),
           torch_ref.get_model("down_conv1d_block", **kw),
           (jnp.asarray(x.transpose(0, 2, 1)), jnp.asarray(target.transpose(0, 2, 1))),
           (torch.from_numpy(x), torch.from_numpy(target)), mse, torch.nn.functional.mse_loss)


def model_sweep() -> list[dict]:
    records = []
    for name, shape, build, tmodel, flax_io, torch_io, loss, tloss in model_cases():
        runs = {"torch": torch_runs(tmodel, *torch_io, tloss)}
        for form, pin in (("before", without_conv_rewrites), ("after", contextlib.nullcontext)):
            with pin():
                runs[form] = jax_runs(build(), *flax_io, loss)
                for fn in runs[form].values():
                    fn()  # trace and compile inside the pin
        for mode in ("forward", "train"):
            r = dict(model=name, input=shape, mode=mode)
            for run in ("before", "after", "torch"):
                blocks = block_ms(runs[run][mode])
                r[f"{run} ms"], r[f"{run} best ms"] = statistics.median(blocks), min(blocks)
            records.append(r)
            print(r, flush=True)
    return records


def model_table(records, device: str) -> str:
    lines = [f"# Models with small-map and one-channel convolutions: XLA (jit) vs eager "
             f"PyTorch, {device}", "",
             f"jax {jax.__version__}, torch {torch.__version__}, torchvision "
             f"{torchvision.__version__}; XLA_FLAGS and memory settings from "
             "benchmarks.configure_process(); float32; "
             "ms per call: the median of 5 blocks after 0.3 s warm-up, each run alone, and "
             "(best) the fastest block, the closest to an idle host's on a shared one; ratio = "
             "torch / ours. `before`: every convolution XLA's own; `after`: "
             "flax_arch.nn.lowering's rewrites. Train: forward, gradients and an SGD step "
             "(lr 0.01).", "",
             "| model | input | mode | before ms (best) | after ms (best) | torch ms (best) | "
             "ratio before (best) | ratio after (best) |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        b, a, t = r["before ms"], r["after ms"], r["torch ms"]
        bb, ab, tb = r["before best ms"], r["after best ms"], r["torch best ms"]
        lines.append(f"| {r['model']} | {r['input']} | {r['mode']} | {b:.1f} "
                     f"({bb:.1f}) | {a:.1f} ({ab:.1f}) | {t:.1f} ({tb:.1f}) | {t / b:.2f}x "
                     f"({tb / bb:.2f}x) | {t / a:.2f}x ({tb / ab:.2f}x) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 8 only")
    parser.add_argument("--models", action="store_true",
                        help="ResNet-18 (native and ported) and SEGAN's down block, before and "
                             "after, instead of the sweep")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = detect().name
    args.out.mkdir(parents=True, exist_ok=True)
    if args.models:
        records = model_sweep()
        stem = args.out / f"conv_sweep_models_{detect().slug}"
        stem.with_suffix(".md").write_text(model_table(records, device))
        stem.with_suffix(".json").write_text(json.dumps(
            dict(device=device, jax=jax.__version__, torch=torch.__version__,
                 xla_flags=os.environ.get("XLA_FLAGS", ""), records=records), indent=1))
        print(f"wrote {stem}.md and .json")
        return
    records = []
    for batch in (8,) if args.quick else BATCHES:
        for cin, cout, k, stride, sizes, *groups in LAYERS:
            for size in sizes if batch == 8 else [s for s in sizes if s <= BIG_MAP]:
                r = measure(batch, cin, cout, k, stride, size, *groups)
                records.append(r)
                print(" ".join(f"{key}={v:.2f}" if isinstance(v, float) else f"{key}={v}"
                               for key, v in r.items()), flush=True)
    stem = args.out / f"conv_sweep_{detect().slug}{'_quick' if args.quick else ''}"
    stem.with_suffix(".md").write_text(table(records, device))
    stem.with_suffix(".json").write_text(json.dumps(
        dict(device=device, jax=jax.__version__, torch=torch.__version__,
             xla_flags=os.environ.get("XLA_FLAGS", ""), records=records), indent=1))
    print(summary(records))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
