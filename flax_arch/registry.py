"""The model registry: every architecture, with its task, sizes and loss, in one place.

An entry names the Flax class (the torch twin is registered under the same name in
:mod:`torch_ref.registry`), its task, a small configuration for tests and the slides' one for
benchmarks (constructor arguments and example inputs, given in torch's layout), the torch
layout of each output, and the loss its training step minimises. The model files hold only
models; everything the parity suite, the benchmarks and the trainer read about a model is
here. Registering a model is all it takes for the parity suite and ``python -m benchmarks``
to cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from flax import nnx

from flax_arch.interop import to_channels_last
from flax_arch.models.alexnet import AlexNet
from flax_arch.models.autoencoder import AE, VAE
from flax_arch.models.conv import CausalConv1d, Conv1d, ConvMLP, ConvTranspose1d
from flax_arch.models.dcgan import Discriminator, Generator
from flax_arch.models.dense import MLP, LinearRegression, LogisticRegression, SoftmaxClassifier
from flax_arch.models.densenet import DenseNet
from flax_arch.models.embedding import Embedding, OneHotLinear
from flax_arch.models.inception import GoogLeNet, Inception
from flax_arch.models.qrnn import QRNN, QRNNLayer
from flax_arch.models.recurrent import GRU, LSTM, RNN, RNNClassifier
from flax_arch.models.resnet import Bottleneck, ResLayer, ResNet, resnet18
from flax_arch.models.segan import Conv1dGenerator, DownConv1dBlock, UpConv1dBlock
from flax_arch.models.unet import UNet

__all__ = ["Input", "Config", "ModelEntry", "TASKS", "GANPair", "GANS", "register",
           "list_models", "get_model", "get_entry"]


@dataclass(frozen=True)
class Input:
    """One example input, described in torch's layout.

    ``layout`` names the axes (``'NC'``, ``'NCL'``, ``'NCHW'``, ``'LNC'``, ``'NL'``): ``N`` is
    the batch axis, a ``C`` before spatial axes is moved last for Flax. ``kind``: ``'normal'``
    (standard normal), ``'unit'`` (uniform in [0, 1)), ``'onehot'`` (one-hot rows over the
    last axis, ``high`` classes) or ``'index'`` (integers in [0, high)).
    """

    shape: tuple[int, ...]
    layout: str
    kind: str = "normal"
    high: int = 0

    def with_batch(self, batch_size: int | None) -> Input:
        if batch_size is None or "N" not in self.layout:
            return self
        shape = list(self.shape)
        shape[self.layout.index("N")] = batch_size
        return replace(self, shape=tuple(shape))

    def sample(self, rng: np.random.Generator, dtype) -> np.ndarray:
        if self.kind == "normal":
            return rng.standard_normal(self.shape).astype(dtype)
        if self.kind == "unit":
            return rng.uniform(0.0, 1.0, self.shape).astype(dtype)
        if self.kind == "onehot":
            idx = rng.integers(0, self.high, self.shape[:-1])
            return np.eye(self.high, dtype=dtype)[idx]
        if self.kind == "index":
            return rng.integers(0, self.high, self.shape).astype(np.int64)
        raise ValueError(f"unknown input kind {self.kind!r}")

    @property
    def differentiable(self) -> bool:
        return self.kind in ("normal", "unit")


@dataclass(frozen=True)
class Config:
    """Constructor arguments and example inputs (torch layout) of one model size."""

    kwargs: dict[str, Any]
    inputs: tuple[Input, ...]
    target: Input | None = None


# What a model does, as the trainer and the benchmarks read it:
TASKS = {
    "classify": "integer class per example; log-probabilities (nll) or logits (cross_entropy)",
    "classify_steps": "integer class at every step of a sequence (the label repeated)",
    "segment": "integer class per pixel",
    "reconstruct": "an auto-encoder: its input is its target (mse)",
    "vae": "the variational auto-encoder: (recon, mu, logvar) and the VAE loss",
    "generate": "a GAN generator: noise in, images out (trained with its discriminator)",
    "discriminate": "a GAN discriminator: images in, a probability out",
    "regress": "a layer or block on a synthetic target of its output's shape",
}


@dataclass(frozen=True)
class GANPair:
    """A generator and a discriminator, by registry name, trained together as one model.

    ``latent_arg`` is the generator's constructor argument that sets the channels of its
    noise input (the registry input's shape gives them where the arguments leave it unset).
    """

    generator: str
    discriminator: str
    latent_arg: str


# The GANs the trainer trains by one name (``python -m flax_arch.train dcgan``):
GANS = {"dcgan": GANPair("dcgan_generator", "dcgan_discriminator", latent_arg="nz")}


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture.

    ``task`` is one of :data:`TASKS`.

    ``outputs`` gives the torch layout of each output leaf in order (``jax.tree.leaves``
    order of the Flax output). ``loss`` names a loss of :mod:`flax_arch.losses` /
    :mod:`torch_ref.losses`, computed against ``Config.target``.

    The sizes that follow the data, for the trainer: ``channels_arg`` names the constructor
    argument that sets the size of the input's last (channels-last) axis, its features or
    channels; ``classes_arg`` the one that sets the number of classes. None where no argument
    does (the VAE's 784 inputs; torchvision's RGB models).

    ``quick`` is the size ``python -m benchmarks --quick`` times: the bench layers (the
    slides' shapes) at a smaller batch, or on smaller inputs where one example is already
    slow, so that every timed call does a millisecond or more of work on a 2-core CPU and
    the whole run stays within minutes. None: the bench size.
    """

    name: str
    family: str
    cls: Callable[..., nnx.Module]
    task: str
    test: Config
    bench: Config
    outputs: tuple[str, ...]
    loss: str
    channels_arg: str | None = None
    classes_arg: str | None = None
    quick: Config | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task must be one of {sorted(TASKS)}, "
                             f"got {self.task!r}")

    def config(self, size: str) -> Config:
        """The configuration of ``size``: ``'test'``, ``'bench'`` or ``'quick'``."""
        if size not in ("test", "bench", "quick"):
            raise ValueError(f"size must be 'test', 'bench' or 'quick', got {size!r}")
        if size == "quick":
            return self.bench if self.quick is None else self.quick
        return self.test if size == "test" else self.bench

    def build(self, size: str | None = None, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
        """The Flax model: the class defaults, or the ``size`` configuration's arguments,
        with ``kwargs`` over them. Every part of the package builds a model here."""
        base = {} if size is None else self.config(size).kwargs
        return self.cls(**{**base, **kwargs}, rngs=rngs)

    def example_inputs(self, size: str = "test", *, batch_size: int | None = None,
                       dtype=np.float32, seed: int = 0):
        """``(torch_inputs, flax_inputs, target)``: NumPy arrays, the same values in each layout.

        ``target`` is in torch's layout; index targets read the same in both layouts, and
        float targets are converted by the harness with :func:`to_channels_last`.
        """
        cfg = self.config(size)
        rng = np.random.default_rng(seed)
        torch_in = tuple(i.with_batch(batch_size).sample(rng, dtype) for i in cfg.inputs)
        flax_in = tuple(to_channels_last(a, i.layout) for a, i in zip(torch_in, cfg.inputs))
        target = None
        if cfg.target is not None:
            target = cfg.target.with_batch(batch_size).sample(rng, dtype)
        return torch_in, flax_in, target


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def list_models(family: str | None = None) -> list[str]:
    """The registered model names, sorted; only ``family``'s when given."""
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_model(name: str, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    """Builds the registered model ``name`` with constructor ``kwargs`` (the class defaults
    otherwise), as ``torch_ref.get_model`` builds its twin: :meth:`ModelEntry.build`."""
    return get_entry(name).build(rngs=rngs, **kwargs)


# ---------------------------------------------------------------- dense

def _nc(features: int, batch: int = 4) -> tuple[Input, ...]:
    return (Input((batch, features), "NC"),)


register(ModelEntry(
    "logistic_regression", "dense", LogisticRegression, task="regress",
    test=Config({"num_inputs": 16}, _nc(16), Input((4, 1), "NC", "unit")),
    bench=Config({"num_inputs": 100}, _nc(100, 256), Input((256, 1), "NC", "unit")),
    quick=Config({"num_inputs": 100}, _nc(100, 65536), Input((65536, 1), "NC", "unit")),
    outputs=("NC",), loss="bce",
))
register(ModelEntry(
    "linear_regression", "dense", LinearRegression, task="regress",
    test=Config({"num_inputs": 16}, _nc(16), Input((4, 1), "NC")),
    bench=Config({"num_inputs": 100}, _nc(100, 256), Input((256, 1), "NC")),
    quick=Config({"num_inputs": 100}, _nc(100, 65536), Input((65536, 1), "NC")),
    outputs=("NC",), loss="mse",
))
register(ModelEntry(
    "softmax_classifier", "dense", SoftmaxClassifier, task="classify",
    channels_arg="num_inputs", classes_arg="num_outputs",
    test=Config({"num_inputs": 16, "num_outputs": 5}, _nc(16), Input((4,), "N", "index", 5)),
    bench=Config({"num_inputs": 100, "num_outputs": 20}, _nc(100, 256),
                 Input((256,), "N", "index", 20)),
    quick=Config({"num_inputs": 100, "num_outputs": 20}, _nc(100, 16384),
                 Input((16384,), "N", "index", 20)),
    outputs=("NC",), loss="nll",
))
register(ModelEntry(
    "mlp", "dense", MLP, task="classify", channels_arg="num_inputs", classes_arg="num_outputs",
    test=Config({"num_inputs": 16, "hidden_size": 32, "num_outputs": 5}, _nc(16),
                Input((4,), "N", "index", 5)),
    bench=Config({}, _nc(100, 256), Input((256,), "N", "index", 20)),
    quick=Config({}, _nc(100, 256), Input((256,), "N", "index", 20)),
    outputs=("NC",), loss="nll",
))


# ---------------------------------------------------------------- embedding

register(ModelEntry(
    "one_hot_linear", "embedding", OneHotLinear, task="regress",
    test=Config({"vocab_size": 50, "hidden_size": 8}, (Input((6, 50), "NC", "onehot", 50),),
                Input((6, 8), "NC")),
    bench=Config({"vocab_size": 10000, "hidden_size": 100},
                 (Input((256, 10000), "NC", "onehot", 10000),), Input((256, 100), "NC")),
    quick=Config({"vocab_size": 10000, "hidden_size": 100},
                 (Input((256, 10000), "NC", "onehot", 10000),), Input((256, 100), "NC")),
    outputs=("NC",), loss="mse",
))
register(ModelEntry(
    "embedding", "embedding", Embedding, task="regress",
    test=Config({"num_embeddings": 50, "embedding_dim": 8, "padding_idx": 0},
                (Input((6, 7), "NL", "index", 50),), Input((6, 7, 8), "NLC")),
    bench=Config({"num_embeddings": 10000, "embedding_dim": 100},
                 (Input((256, 32), "NL", "index", 10000),), Input((256, 32, 100), "NLC")),
    quick=Config({"num_embeddings": 10000, "embedding_dim": 100},
                 (Input((2048, 32), "NL", "index", 10000),), Input((2048, 32, 100), "NLC")),
    outputs=("NLC",), loss="mse",
))


# ---------------------------------------------------------------- recurrent

register(ModelEntry(
    "rnn", "recurrent", RNN, task="regress",
    test=Config({"input_size": 4, "hidden_size": 3, "num_layers": 2},
                (Input((5, 2, 4), "LNC"),), Input((5, 2, 3), "LNC")),
    bench=Config({"input_size": 100, "hidden_size": 512},
                 (Input((100, 16, 100), "LNC"),), Input((100, 16, 512), "LNC")),
    quick=Config({"input_size": 100, "hidden_size": 512},
                 (Input((100, 16, 100), "LNC"),), Input((100, 16, 512), "LNC")),
    outputs=("LNC", "DNC"), loss="mse",
))
register(ModelEntry(
    "lstm", "recurrent", LSTM, task="regress",
    test=Config({"input_size": 4, "hidden_size": 3, "num_layers": 2, "bidirectional": True},
                (Input((5, 2, 4), "LNC"),), Input((5, 2, 6), "LNC")),
    bench=Config({"input_size": 100, "hidden_size": 512},
                 (Input((100, 16, 100), "LNC"),), Input((100, 16, 512), "LNC")),
    quick=Config({"input_size": 100, "hidden_size": 512},
                 (Input((100, 16, 100), "LNC"),), Input((100, 16, 512), "LNC")),
    outputs=("LNC", "DNC", "DNC"), loss="mse",
))
register(ModelEntry(
    "gru", "recurrent", GRU, task="regress",
    test=Config({"input_size": 4, "hidden_size": 3, "num_layers": 2, "batch_first": True},
                (Input((2, 5, 4), "NLC"),), Input((2, 5, 3), "NLC")),
    bench=Config({"input_size": 100, "hidden_size": 512, "batch_first": True},
                 (Input((16, 100, 100), "NLC"),), Input((16, 100, 512), "NLC")),
    quick=Config({"input_size": 100, "hidden_size": 512, "batch_first": True},
                 (Input((16, 100, 100), "NLC"),), Input((16, 100, 512), "NLC")),
    outputs=("NLC", "DNC"), loss="mse",
))
register(ModelEntry(
    "rnn_classifier", "recurrent", RNNClassifier, task="classify_steps",
    channels_arg="num_inputs", classes_arg="num_outputs",
    test=Config({"num_inputs": 4, "hidden_size": 3, "num_outputs": 6, "num_layers": 2},
                (Input((2, 5, 4), "NLC"),), Input((2, 5), "NL", "index", 6)),
    bench=Config({"num_inputs": 100, "hidden_size": 512, "num_outputs": 10},
                 (Input((16, 100, 100), "NLC"),), Input((16, 100), "NL", "index", 10)),
    quick=Config({"num_inputs": 100, "hidden_size": 512, "num_outputs": 10},
                 (Input((16, 100, 100), "NLC"),), Input((16, 100), "NL", "index", 10)),
    outputs=("NLC",), loss="nll_classes_last",
))


# ---------------------------------------------------------------- conv

register(ModelEntry(
    "conv1d", "conv", Conv1d, task="regress",
    test=Config({"in_channels": 4, "out_channels": 8, "kernel_size": 3, "padding": 1},
                (Input((2, 4, 16), "NCL"),), Input((2, 8, 16), "NCL")),
    bench=Config({"in_channels": 64, "out_channels": 128, "kernel_size": 3, "padding": 1},
                 (Input((32, 64, 1024), "NCL"),), Input((32, 128, 1024), "NCL")),
    quick=Config({"in_channels": 64, "out_channels": 128, "kernel_size": 3, "padding": 1},
                 (Input((16, 64, 1024), "NCL"),), Input((16, 128, 1024), "NCL")),
    outputs=("NCL",), loss="mse",
))
register(ModelEntry(
    "causal_conv1d", "conv", CausalConv1d, task="regress",
    test=Config({"in_channels": 4, "out_channels": 8, "kernel_size": 3, "dilation": 2},
                (Input((2, 4, 16), "NCL"),), Input((2, 8, 16), "NCL")),
    bench=Config({"in_channels": 64, "out_channels": 128, "kernel_size": 3, "dilation": 2},
                 (Input((32, 64, 1024), "NCL"),), Input((32, 128, 1024), "NCL")),
    quick=Config({"in_channels": 64, "out_channels": 128, "kernel_size": 3, "dilation": 2},
                 (Input((16, 64, 1024), "NCL"),), Input((16, 128, 1024), "NCL")),
    outputs=("NCL",), loss="mse",
))
register(ModelEntry(
    "conv_mlp", "conv", ConvMLP, task="classify_steps",
    channels_arg="num_inputs", classes_arg="num_outputs",
    test=Config({"num_inputs": 16, "hidden_size": 32, "num_outputs": 5},
                (Input((2, 16, 6), "NCL"),), Input((2, 6), "NL", "index", 5)),
    bench=Config({}, (Input((16, 100, 64), "NCL"),), Input((16, 64), "NL", "index", 20)),
    quick=Config({}, (Input((8, 100, 64), "NCL"),), Input((8, 64), "NL", "index", 20)),
    outputs=("NCL",), loss="nll",
))
register(ModelEntry(
    "conv_transpose1d", "conv", ConvTranspose1d, task="regress",
    test=Config({"in_channels": 4, "out_channels": 6, "kernel_size": 8, "stride": 4},
                (Input((2, 4, 5), "NCL"),), Input((2, 6, 24), "NCL")),
    bench=Config({"in_channels": 128, "out_channels": 64, "kernel_size": 8, "stride": 4},
                 (Input((32, 128, 256), "NCL"),), Input((32, 64, 1028), "NCL")),
    quick=Config({"in_channels": 128, "out_channels": 64, "kernel_size": 8, "stride": 4},
                 (Input((32, 128, 256), "NCL"),), Input((32, 64, 1028), "NCL")),
    outputs=("NCL",), loss="mse",
))


# ---------------------------------------------------------------- qrnn

register(ModelEntry(
    "qrnn_layer", "qrnn", QRNNLayer, task="regress",
    test=Config({"num_inputs": 4, "num_outputs": 6, "kwidth": 2, "pooling": "fo"},
                (Input((2, 5, 4), "NLC"), Input((2, 6), "NC")), Input((2, 5, 6), "NLC")),
    bench=Config({"num_inputs": 320, "num_outputs": 320, "kwidth": 2, "pooling": "fo"},
                 (Input((16, 128, 320), "NLC"),), Input((16, 128, 320), "NLC")),
    quick=Config({"num_inputs": 320, "num_outputs": 320, "kwidth": 2, "pooling": "fo"},
                 (Input((16, 128, 320), "NLC"),), Input((16, 128, 320), "NLC")),
    outputs=("NLC", "NC"), loss="mse",
))
register(ModelEntry(
    "qrnn", "qrnn", QRNN, task="regress",
    test=Config({"num_inputs": 4, "hidden_size": 6, "num_layers": 2, "kwidth": 3,
                 "pooling": "ifo", "bidirectional": True},
                (Input((2, 5, 4), "NLC"), Input((4, 2, 6), "DNC")), Input((2, 5, 12), "NLC")),
    bench=Config({"num_inputs": 320, "hidden_size": 320, "kwidth": 2, "pooling": "fo"},
                 (Input((16, 128, 320), "NLC"),), Input((16, 128, 320), "NLC")),
    quick=Config({"num_inputs": 320, "hidden_size": 320, "kwidth": 2, "pooling": "fo"},
                 (Input((16, 128, 320), "NLC"),), Input((16, 128, 320), "NLC")),
    outputs=("NLC", "DNC"), loss="mse",
))


# ---------------------------------------------------------------- autoencoder

register(ModelEntry(
    "ae", "autoencoder", AE, task="reconstruct", channels_arg="num_inputs",
    test=Config({"num_inputs": 48}, (Input((4, 48), "NC"),), Input((4, 48), "NC")),
    bench=Config({"num_inputs": 784}, (Input((256, 784), "NC"),), Input((256, 784), "NC")),
    quick=Config({"num_inputs": 784}, (Input((256, 784), "NC"),), Input((256, 784), "NC")),
    outputs=("NC",), loss="mse",
))
register(ModelEntry(
    "vae", "autoencoder", VAE, task="vae",
    test=Config({}, (Input((4, 784), "NC", "unit"), Input((4, 20), "NC")),
                Input((4, 784), "NC", "unit")),
    bench=Config({}, (Input((256, 784), "NC", "unit"), Input((256, 20), "NC")),
                 Input((256, 784), "NC", "unit")),
    quick=Config({}, (Input((256, 784), "NC", "unit"), Input((256, 20), "NC")),
                 Input((256, 784), "NC", "unit")),
    outputs=("NC", "NC", "NC"), loss="vae",
))


# ---------------------------------------------------------------- alexnet

register(ModelEntry(
    "alexnet", "alexnet", AlexNet, task="classify", classes_arg="num_classes",
    # test: a 64-wide classifier (hidden_features), as the 4096-wide one's 54M parameters
    # took 7 GB and a minute for the float64 optimizer checks; test_alexnet.py checks the
    # full width against torchvision
    test=Config({"num_classes": 10, "dropout": 0.0, "hidden_features": 64},
                (Input((2, 3, 64, 64), "NCHW"),),
                Input((2,), "N", "index", 10)),
    bench=Config({}, (Input((16, 3, 224, 224), "NCHW"),), Input((16,), "N", "index", 1000)),
    quick=Config({}, (Input((1, 3, 224, 224), "NCHW"),), Input((1,), "N", "index", 1000)),
    outputs=("NC",), loss="cross_entropy",
))


# ---------------------------------------------------------------- inception

register(ModelEntry(
    "inception", "inception", Inception, task="regress",
    test=Config({"in_channels": 8, "ch1x1": 4, "ch3x3red": 3, "ch3x3": 5, "ch5x5red": 2,
                 "ch5x5": 3, "pool_proj": 4},
                (Input((2, 8, 7, 6), "NCHW"),), Input((2, 16, 7, 6), "NCHW")),
    bench=Config({"in_channels": 192, "ch1x1": 64, "ch3x3red": 96, "ch3x3": 128,
                  "ch5x5red": 16, "ch5x5": 32, "pool_proj": 32},
                 (Input((32, 192, 28, 28), "NCHW"),), Input((32, 256, 28, 28), "NCHW")),
    quick=Config({"in_channels": 192, "ch1x1": 64, "ch3x3red": 96, "ch3x3": 128,
                  "ch5x5red": 16, "ch5x5": 32, "pool_proj": 32},
                 (Input((4, 192, 28, 28), "NCHW"),), Input((4, 256, 28, 28), "NCHW")),
    outputs=("NCHW",), loss="mse",
))
register(ModelEntry(
    "googlenet", "inception", GoogLeNet, task="classify", classes_arg="num_classes",
    test=Config({"num_classes": 10, "dropout": 0.0, "dropout_aux": 0.0},
                (Input((2, 3, 64, 64), "NCHW"),), Input((2,), "N", "index", 10)),
    bench=Config({}, (Input((16, 3, 224, 224), "NCHW"),), Input((16,), "N", "index", 1000)),
    quick=Config({}, (Input((1, 3, 224, 224), "NCHW"),), Input((1,), "N", "index", 1000)),
    outputs=("NC",), loss="cross_entropy",
))


# ---------------------------------------------------------------- resnet

# The image classifiers' quick size is a CIFAR batch: 8 images of 32 x 32, 10 classes. Their
# last stages run on 2 x 2 and 1 x 1 maps there, where XLA:CPU's convolutions once fell off
# their fast path (~100x slower than torch; flax_arch.nn.lowering.conv), so that a regression
# on small maps shows in the quick table; bench stays at ImageNet's 224 x 224.
CIFAR_BATCH = (8, 32, 10)


def _images(batch: int, size: int, num_classes: int) -> dict:
    return dict(inputs=(Input((batch, 3, size, size), "NCHW"),),
                target=Input((batch,), "N", "index", num_classes))


register(ModelEntry(
    "res_layer", "resnet", ResLayer, task="regress",
    test=Config({"num_inputs": 8}, (Input((2, 8, 12, 12), "NCHW"),), Input((2, 8, 12, 12), "NCHW")),
    # the slide's ResLayer(64) on its 100 x 100 input
    bench=Config({"num_inputs": 64}, (Input((16, 64, 100, 100), "NCHW"),),
                 Input((16, 64, 100, 100), "NCHW")),
    quick=Config({"num_inputs": 64}, (Input((1, 64, 100, 100), "NCHW"),),
                 Input((1, 64, 100, 100), "NCHW")),
    outputs=("NCHW",), loss="mse",
))
# ResNet test inputs are 2 x 64 x 64 so that the last stage's train-mode BatchNorm sees
# 2 * 2 * 2 values per channel: with 2 * 1 * 1 it maps every pair to (-1, 1) whatever the
# input, and its gradient is rounding noise.
register(ModelEntry(
    "resnet18", "resnet", resnet18, task="classify", classes_arg="num_classes",
    test=Config({"num_classes": 10}, **_images(2, 64, 10)),
    bench=Config({}, **_images(16, 224, 1000)),
    quick=Config({"num_classes": 10}, **_images(*CIFAR_BATCH)),
    outputs=("NC",), loss="cross_entropy",
))
# Bottleneck ResNets at one block per stage for tests; at bench, ResNet-50 and ResNeXt-50 32x4d.
register(ModelEntry(
    "resnet_bottleneck", "resnet", partial(ResNet, Bottleneck), task="classify",
    classes_arg="num_classes",
    test=Config({"layers": [1, 1, 1, 1], "num_classes": 10}, **_images(2, 64, 10)),
    bench=Config({"layers": [3, 4, 6, 3]}, **_images(16, 224, 1000)),
    quick=Config({"layers": [3, 4, 6, 3], "num_classes": 10}, **_images(*CIFAR_BATCH)),
    outputs=("NC",), loss="cross_entropy",
))
register(ModelEntry(
    "resnext", "resnet", partial(ResNet, Bottleneck), task="classify",
    classes_arg="num_classes",
    test=Config({"layers": [1, 1, 1, 1], "groups": 4, "width_per_group": 8, "num_classes": 10},
                **_images(2, 64, 10)),
    bench=Config({"layers": [3, 4, 6, 3], "groups": 32, "width_per_group": 4},
                 **_images(16, 224, 1000)),
    # quick: one block per stage, as XLA takes a minute to compile the 32-way grouped
    # convolutions of all 16 blocks' training step on 2 cores
    quick=Config({"layers": [1, 1, 1, 1], "groups": 32, "width_per_group": 4,
                  "num_classes": 10}, **_images(*CIFAR_BATCH)),
    outputs=("NC",), loss="cross_entropy",
))


# ---------------------------------------------------------------- densenet

register(ModelEntry(
    "densenet121", "densenet", DenseNet, task="classify", classes_arg="num_classes",
    # test: a narrow two-block DenseNet-BC; bench: the class defaults, DenseNet-121
    test=Config({"growth_rate": 8, "block_config": (2, 2), "num_init_features": 16,
                 "bn_size": 2, "num_classes": 10},
                (Input((2, 3, 32, 32), "NCHW"),), Input((2,), "N", "index", 10)),
    bench=Config({}, (Input((16, 3, 224, 224), "NCHW"),), Input((16,), "N", "index", 1000)),
    quick=Config({"num_classes": 10}, **_images(*CIFAR_BATCH)),
    outputs=("NC",), loss="cross_entropy",
))


# ---------------------------------------------------------------- unet

register(ModelEntry(
    "unet", "unet", UNet, task="segment",
    # depth 2, non-square: 44 x 52 -> 4 x 12 (valid sizes 4k + 12, k >= 8)
    test=Config({"in_channels": 3, "num_classes": 3, "base_channels": 4, "depth": 2},
                (Input((2, 3, 44, 52), "NCHW"),), Input((2, 4, 12), "NHW", "index", 3)),
    # the paper's network: 572 x 572 -> 388 x 388, pixel-wise softmax cross-entropy
    bench=Config({}, (Input((1, 1, 572, 572), "NCHW"),), Input((1, 388, 388), "NHW", "index", 2)),
    # quick: the paper's network on its smallest valid input, 188 x 188 -> 4 x 4
    quick=Config({}, (Input((1, 1, 188, 188), "NCHW"),), Input((1, 4, 4), "NHW", "index", 2)),
    outputs=("NCHW",), loss="cross_entropy",
))


# ---------------------------------------------------------------- segan

register(ModelEntry(
    "down_conv1d_block", "segan", DownConv1dBlock, task="regress",
    test=Config({"ninp": 2, "fmap": 4, "kwidth": 31, "stride": 4},
                (Input((2, 2, 64), "NCL"),), Input((2, 4, 16), "NCL")),
    # the slide's block and length, at batch 8
    bench=Config({"ninp": 1, "fmap": 1, "kwidth": 31, "stride": 4},
                 (Input((8, 1, 4000), "NCL"),), Input((8, 1, 1000), "NCL")),
    quick=Config({"ninp": 1, "fmap": 1, "kwidth": 31, "stride": 4},
                 (Input((256, 1, 4000), "NCL"),), Input((256, 1, 1000), "NCL")),
    outputs=("NCL",), loss="mse",
))
register(ModelEntry(
    "up_conv1d_block", "segan", UpConv1dBlock, task="regress",
    test=Config({"ninp": 4, "fmap": 2, "kwidth": 31, "stride": 4},
                (Input((2, 4, 16), "NCL"),), Input((2, 2, 64), "NCL")),
    bench=Config({"ninp": 1, "fmap": 1, "kwidth": 31, "stride": 4},
                 (Input((8, 1, 1000), "NCL"),), Input((8, 1, 4000), "NCL")),
    quick=Config({"ninp": 1, "fmap": 1, "kwidth": 31, "stride": 4},
                 (Input((128, 1, 1000), "NCL"),), Input((128, 1, 4000), "NCL")),
    outputs=("NCL",), loss="mse",
))
register(ModelEntry(
    "segan_generator", "segan", Conv1dGenerator, task="regress",
    test=Config({"enc_fmaps": (4, 8), "kwidth": 31, "pooling": 4},
                (Input((2, 1, 256), "NCL"),), Input((2, 1, 256), "NCL")),
    # the slide's generator: 8192 samples (about half a second at 16 kHz), batch 8
    bench=Config({}, (Input((8, 1, 8192), "NCL"),), Input((8, 1, 8192), "NCL")),
    quick=Config({}, (Input((1, 1, 8192), "NCL"),), Input((1, 1, 8192), "NCL")),
    outputs=("NCL",), loss="mse",
))


# ---------------------------------------------------------------- dcgan

register(ModelEntry(
    "dcgan_generator", "dcgan", Generator, task="generate", channels_arg="nc",
    test=Config({"nc": 3, "nz": 16, "ngf": 8}, (Input((4, 16, 1, 1), "NCHW"),),
                Input((4, 3, 64, 64), "NCHW")),
    # the slide's generator at the example's batch size
    bench=Config({}, (Input((64, 100, 1, 1), "NCHW"),), Input((64, 3, 64, 64), "NCHW")),
    quick=Config({}, (Input((4, 100, 1, 1), "NCHW"),), Input((4, 3, 64, 64), "NCHW")),
    outputs=("NCHW",), loss="mse",
))
register(ModelEntry(
    "dcgan_discriminator", "dcgan", Discriminator, task="discriminate", channels_arg="nc",
    test=Config({"nc": 3, "ndf": 8}, (Input((4, 3, 64, 64), "NCHW"),),
                Input((4, 1, 1, 1), "NCHW", "unit")),
    bench=Config({}, (Input((64, 3, 64, 64), "NCHW"),), Input((64, 1, 1, 1), "NCHW", "unit")),
    quick=Config({}, (Input((8, 3, 64, 64), "NCHW"),), Input((8, 1, 1, 1), "NCHW", "unit")),
    outputs=("NCHW",), loss="bce",
))
