"""Public model zoos through :func:`flax_arch.port`: torchvision classifiers, timm image
models, Hugging Face transformers models built from small configs (no download).

    python -m parity_tests.zoo_sweep [--family F ...] [--only NAME ...] [--train [NAME ...]]
                                     [--out FILE] [--merge FILE.json ...]

Each model, random weights, float64, eval mode: ported at a small input, its output compared
with torch's at max|diff| <= 1e-9 * max(1, max|torch|). Outcomes: *match*, *refused* (a
PortError: the op or the tracing step that the port lacks, named), *WRONG*, *CRASH*. With
``--train``, the matching models named (the ``TRAIN`` subset without names, ``all``) also
pass :func:`flax_arch.testing.assert_parity` in train mode. ``--out`` rewrites the report
after each model and keeps the results in ``FILE.json``; ``--merge`` writes one report of
several runs' JSON files (the families run in parallel processes).
Needs the ``zoo`` extra (``pip install -e .[zoo]``). Results: ``parity_tests/zoo_sweep.md``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import time
import traceback

import jax
import numpy as np
import torch
from flax import nnx

jax.config.update("jax_enable_x64", True)

import flax_arch  # noqa: E402
from flax_arch.port import PortError  # noqa: E402

TOL = 1e-9


def torchvision_models():
    import torchvision.models as tvm
    from torchvision.models.vision_transformer import VisionTransformer

    image = torch.randn(1, 3, 64, 64)
    for name in ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "alexnet",
                 "vgg11", "squeezenet1_0", "densenet121", "googlenet", "mobilenet_v2",
                 "mobilenet_v3_small", "mnasnet0_5", "shufflenet_v2_x0_5", "efficientnet_b0",
                 "regnet_y_400mf", "regnet_x_400mf", "convnext_tiny"]:
        kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
        yield f"torchvision.{name}", (lambda n=name, k=kwargs: getattr(tvm, n)(
            weights=None, **k)), (image,)
    yield "torchvision.VisionTransformer(small)", lambda: VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64), (torch.randn(1, 3, 32, 32),)


SIZED = ("vit", "deit", "mixer", "resmlp", "gmlp", "pit", "xcit", "convit", "eva02", "coat",
         "cait", "visformer")  # timm models built for the input's size


def timm_models():
    import timm

    for name, size in [("resnet10t", 64), ("resnet18d", 64), ("mobilenetv3_small_050", 64),
                       ("efficientnet_b0", 64), ("regnetx_002", 64), ("convnext_atto", 64),
                       ("ghostnet_050", 64), ("mixer_s32_224", 64), ("vit_tiny_patch16_224", 32),
                       ("deit_tiny_patch16_224", 32), ("swin_tiny_patch4_window7_224", 224),
                       ("cspresnet50", 64), ("dla34", 64), ("dpn68", 64), ("rexnet_100", 64),
                       ("hrnet_w18_small", 64), ("res2net50_14w_8s", 64), ("sebotnet33ts_256", 256),
                       ("poolformer_s12", 64), ("levit_128s", 224),
                       ("resmlp_12_224", 64), ("gmlp_s16_224", 64), ("pit_ti_224", 64),
                       ("mobilevit_xxs", 64), ("tinynet_e", 64), ("lcnet_050", 64),
                       ("mixnet_s", 64), ("fbnetc_100", 64), ("inception_v3", 75),
                       ("xception41", 64), ("nfnet_l0", 64), ("pvt_v2_b0", 64),
                       ("edgenext_xx_small", 64), ("tf_efficientnetv2_b0", 64),
                       ("mobilenetv4_conv_small", 64), ("repvgg_a0", 64), ("hgnetv2_b0", 64),
                       ("fastvit_t8", 64), ("resnest14d", 64), ("skresnet18", 64),
                       ("ese_vovnet19b_dw", 64), ("mobileone_s0", 64),
                       ("deit3_small_patch16_224", 32), ("xcit_nano_12_p16_224", 32),
                       ("convit_tiny", 32), ("efficientvit_b0", 64), ("inception_next_tiny", 64),
                       ("starnet_s1", 64), ("ghostnetv2_100", 64),
                       ("eva02_tiny_patch14_224", 28), ("coat_lite_tiny", 64),
                       ("cait_xxs24_224", 32), ("visformer_tiny", 64)]:
        kwargs = {"img_size": size} if name.startswith(SIZED) else {}
        yield f"timm.{name}", (lambda n=name, k=kwargs: timm.create_model(
            n, pretrained=False, **k)), (torch.randn(1, 3, size, size),)


def transformers_models():
    import transformers as tf

    ids = torch.randint(0, 100, (1, 8))
    small = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64)
    decoder = dict(small, num_key_value_heads=1, use_cache=False)
    configs = {
        "BertModel": tf.BertConfig(**small),
        "RobertaModel": tf.RobertaConfig(**small),
        "DistilBertModel": tf.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2,
                                               hidden_dim=64),
        "AlbertModel": tf.AlbertConfig(**small, embedding_size=16),
        "ElectraModel": tf.ElectraConfig(**small, embedding_size=16),
        "GPT2Model": tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2,
                                   use_cache=False),
        "GPTNeoModel": tf.GPTNeoConfig(vocab_size=100, hidden_size=32, num_layers=2,
                                       num_heads=2, attention_types=[[["global", "local"], 1]],
                                       window_size=4, use_cache=False),
        "OPTModel": tf.OPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32,
                                 use_cache=False),
        "LlamaModel": tf.LlamaConfig(**decoder),
        "MistralModel": tf.MistralConfig(**decoder),
        "Qwen2Model": tf.Qwen2Config(**decoder),
        "T5EncoderModel": tf.T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64,
                                      num_layers=2, num_heads=2),
    }
    for name, config in configs.items():
        yield f"transformers.{name}", (lambda n=name, c=config: getattr(tf, n)(c)), (ids,)
    yield "transformers.ViTModel", lambda: tf.ViTModel(tf.ViTConfig(
        **{k: v for k, v in small.items() if k != "vocab_size"}, image_size=32,
        patch_size=8)), (torch.randn(1, 3, 32, 32),)


@contextlib.contextmanager
def float64_throughout():
    """transformers' float32 islands in a float64 model (RMSNorm's ``.to(torch.float32)``,
    the rotary embedding's ``.float()``, a softmax's ``dtype=torch.float32``) redirected to
    float64 while the block runs: in torch's own forward and in the port's torch.export
    trace alike (export runs torch's methods; an fx trace records them as called, so this
    reaches only models that port through torch.export), so that both sides compute the
    model in float64 throughout."""
    to, as_float, softmax = torch.Tensor.to, torch.Tensor.float, torch.nn.functional.softmax

    def wide(dtype):
        return torch.float64 if dtype is torch.float32 else dtype

    def to64(self, *args, **kwargs):
        if "dtype" in kwargs:
            kwargs["dtype"] = wide(kwargs["dtype"])
        return to(self, *map(wide, args), **kwargs)

    def softmax64(*args, dtype=None, **kwargs):
        return softmax(*args, dtype=wide(dtype), **kwargs)

    torch.Tensor.to, torch.nn.functional.softmax = to64, softmax64
    torch.Tensor.float = lambda self, *args, **kwargs: to(self, torch.float64, *args, **kwargs)
    try:
        yield
    finally:
        torch.Tensor.to, torch.Tensor.float = to, as_float
        torch.nn.functional.softmax = softmax


def leaves(out) -> list:
    if isinstance(out, torch.Tensor) or hasattr(out, "ndim"):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in leaves(v)]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in leaves(o)]
    return []


def randomize(model):
    """Random normalisation statistics and affine maps (a random-init model has the
    identity there, which would hide a wrong normalisation axis), and a random scale on every
    parameter, so that outputs are of order one and the comparison has something to see."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _compare(model, ported, inputs) -> tuple[str, float, str]:
    """The port's output, compiled whole (``nnx.jit``: on 2 cores a third of the time of
    the eager call, whose every op compiles apart), against torch's."""
    with torch.no_grad():
        ref = leaves(model(*inputs))
    ours = leaves(nnx.jit(lambda m, *xs: m(*xs))(ported, *[x.numpy() for x in inputs]))
    if len(ours) != len(ref):
        return "WRONG", float("inf"), f"{len(ours)} outputs, torch has {len(ref)}"
    worst, size = 0.0, max(float(np.max(np.abs(r.numpy()), initial=0)) for r in ref)
    for k, (o, r) in enumerate(zip(ours, ref)):
        r = r.numpy()
        if np.shape(o) != r.shape:
            return "WRONG", float("inf"), f"output {k}: shape {np.shape(o)} != {r.shape}"
        scale = max(1.0, float(np.max(np.abs(r), initial=0)))
        worst = max(worst, float(np.max(np.abs(np.asarray(o) - r), initial=0)) / scale)
    return ("match" if worst <= TOL else "WRONG"), worst, f"max|output| {size:.2g}"


def check(build, inputs) -> tuple[str, float, str]:
    """The eval-mode forward compared. A transformers model that computes islands in float32
    (RMSNorm, rotary embeddings) differs from torch there by float32's rounding (torch's
    float32 mean and cos/sin are not XLA's to the ulp): such a model is ported and compared
    again with those casts at float64 (:func:`float64_throughout`), and matches only there;
    its detail gives the error as designed."""
    torch.manual_seed(0)
    model = randomize(build().to(torch.float64).eval())
    inputs = tuple(x.to(torch.float64) if x.is_floating_point() else x for x in inputs)
    outcome, worst, detail = _compare(model, flax_arch.port(model, *inputs,
                                                            channels_last=False), inputs)
    if outcome == "WRONG" and type(model).__module__.startswith("transformers.") and (
            worst < 10 * np.finfo(np.float32).eps):
        with float64_throughout():
            ported = flax_arch.port(model, *inputs, channels_last=False)
            outcome, wide, detail = _compare(model, ported, inputs)
        detail += f"; float64 throughout (as designed, float32 islands: {worst:.1e})"
        worst = wide
    return outcome, worst, detail


def _no_dropout(model):
    """Dropout, stochastic depth and drop path at p = 0: train mode without randomness, so
    that both sides compute the same function. A rate kept as a float attribute for a
    functional call (transformers' OPT ``self.dropout``, T5's attention, timm's
    ``drop_rate``) is set to 0 as well."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) or type(m).__name__ in (
                "StochasticDepth",):
            m.p = 0.0
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
        for name, value in list(vars(m).items()):
            if "drop" in name and isinstance(value, float):
                setattr(m, name, 0.0)
    return model


@contextlib.contextmanager
def exact_hardsigmoid():
    """torch's float64 ``F.hardsigmoid`` backward multiplies by 1/6 rounded to float32 (2.98e-8
    relative, measured against ``relu6(x + 3) / 6``'s); the port's is the exact 1/6
    (``flax_arch.nn.Hardsigmoid``). While the block runs torch computes the composite, whose
    forward is bit-equal and whose backward is float64 throughout."""
    hardsigmoid = torch.nn.functional.hardsigmoid
    torch.nn.functional.hardsigmoid = (
        lambda x, inplace=False: torch.nn.functional.relu6(x + 3) / 6)
    try:
        yield
    finally:
        torch.nn.functional.hardsigmoid = hardsigmoid


TRAIN_BATCH = 4


def _train_batch(x):
    """Train mode on a batch of ``TRAIN_BATCH``: BatchNorm needs more than one value per
    channel (torch refuses a (1, C) batch), and over two values a channel normalises to +-1
    whatever they are, so its gradient is rounding (ReXNet's squeeze-excite BatchNorm on a
    1x1 map: gradients 2.6e-10 apart at batch 2, 1.3e-13 at batch 4)."""
    if x.shape[:1] != (1,):
        return x
    if x.is_floating_point():
        return torch.randn((TRAIN_BATCH, *x.shape[1:]), dtype=x.dtype,
                           generator=torch.Generator().manual_seed(3))
    return torch.cat([x, x.flip(-1), x.roll(1, -1), x.roll(-1, -1)])


def train_check(build, inputs) -> str:
    """``assert_parity`` in train mode: forward (batch statistics), every gradient, SGD and
    Adam steps. Image models are ported channels-last (the layouts of ``assert_parity``'s
    defaults), token models in torch's layout (outputs (batch, seq, hidden) as they are).
    The weights are the model's own initialisation, not :func:`randomize`'s: the steps train
    on the outputs' sum, and from randomised weights SGD drives SqueezeNet's to 3e11 in two
    steps and Adam's next forward overflows (on both sides alike)."""
    from flax_arch.testing import assert_parity

    torch.manual_seed(0)
    model = _no_dropout(build().to(torch.float64).train())
    images = inputs[0].is_floating_point()
    inputs = tuple(_train_batch(x.to(torch.float64) if x.is_floating_point() else x)
                   for x in inputs)
    wide = contextlib.nullcontext()
    if type(model).__module__.startswith("transformers."):
        wide = float64_throughout()
    with wide, exact_hardsigmoid():
        ported = flax_arch.port(model, *inputs, channels_last=images)
        layouts = None
        if not images:
            with torch.no_grad():
                ranks = [r.ndim for r in leaves(model(*inputs))]
            layouts = [{3: "NLC", 2: "NC"}.get(r, "N" * r) for r in ranks]
        report = assert_parity(ported, model, *[x.numpy() for x in inputs], train=True,
                               output_layouts=layouts)
    return "pass (" + ", ".join(f"{k} {c.error:.1e}" for k, c in report.largest().items()) + ")"


TRAIN = ("torchvision.squeezenet1_0", "torchvision.VisionTransformer(small)", "timm.resnet10t",
         "timm.mixer_s32_224", "timm.vit_tiny_patch16_224", "timm.convnext_atto",
         "transformers.BertModel", "transformers.GPT2Model", "transformers.LlamaModel",
         "transformers.ViTModel")


FAMILIES = {"torchvision": torchvision_models, "timm": timm_models,
            "transformers": transformers_models}


def sweep(only=(), train=(), out=None, families=tuple(FAMILIES)) -> dict:
    results = {}
    for family in (FAMILIES[f] for f in families):
        try:
            models = list(family())
        except ImportError as err:
            results[family.__name__] = ("skipped", 0.0, f"not installed: {err}", 0.0, "")
            continue
        for name, build, inputs in models:
            if only and name not in only:
                continue
            start = time.perf_counter()
            try:
                outcome, err, detail = check(build, inputs)
            except PortError as e:
                outcome, err, detail = "refused", 0.0, " / ".join(
                    line.strip() for line in str(e).splitlines()[1:4]) or str(e)[:300]
            except Exception as e:  # noqa: BLE001
                outcome, err = "CRASH", 0.0
                detail = (f"{type(e).__name__}: {str(e)[:200]} @ "
                          + traceback.format_exc().strip().splitlines()[-3].strip())
            seconds, trained = time.perf_counter() - start, ""
            if outcome == "match" and ("all" in train or name in train):
                try:
                    trained = train_check(build, inputs)
                except Exception as e:  # noqa: BLE001 - AssertionError names the check
                    trained = f"FAIL: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            results[name] = (outcome, err, detail, seconds, trained)
            print(f"{name:45s} {outcome:8s} {err:.1e} {seconds:6.1f}s {detail[:300]} "
                  f"{trained}", flush=True)
            if out:
                with open(out, "w") as f:
                    f.write(report(results))
                with open(out + ".json", "w") as f:
                    json.dump(results, f)
    return results


def report(results: dict) -> str:
    counts = collections.Counter(r[0] for r in results.values())
    trained = collections.Counter(r[4].split(" ")[0] for r in results.values() if r[4])
    lines = ["# Model zoos through flax_arch.port", "",
             f"torch {torch.__version__}, jax {jax.__version__}; float64, eval-mode forward, "
             f"tolerance {TOL:.0e} relative to max(1, max|torch|); "
             "`python -m parity_tests.zoo_sweep --train ... --out parity_tests/zoo_sweep.md`.",
             "",
             f"{len(results)} models: " + ", ".join(f"{k} {v}" for k, v in
                                                     sorted(counts.items())),
             "train-mode `assert_parity` (forward, gradients, SGD and Adam steps; dropout at "
             "p=0): " + (", ".join(f"{k} {v}" for k, v in sorted(trained.items())) or "none"),
             "", "| model | outcome | error | seconds | detail | train-mode parity |",
             "|---|---|---|---|---|---|"]
    for name, (outcome, err, detail, secs, train) in results.items():
        lines.append(f"| {name} | {outcome} | {err:.1e} | {secs:.1f} | "
                     f"{detail.replace('|', '/')} | {train.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=())
    parser.add_argument("--family", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--train", nargs="*", default=(),
                        help="models (or 'all') also checked with assert_parity in train "
                             "mode; --train alone: the TRAIN subset")
    parser.add_argument("--out", default=None, help="the report, rewritten after each model")
    parser.add_argument("--merge", nargs="*", default=(), help="JSON results to report on")
    args = parser.parse_args()
    train = set(args.train) if args.train else (set(TRAIN) if args.train == [] else set())
    if args.merge:
        merged = {}
        for name in args.merge:
            with open(name) as f:
                merged.update(json.load(f))
        text = report(merged)
    else:
        text = report(sweep(set(args.only), train, args.out, args.family))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
