"""The "Deep Architectures" lecture in Flax NNX: every architecture, channels-last.

Every class has a PyTorch twin of the same name, arguments and state tree in
:mod:`torch_ref`; :func:`load_torch_state_dict` and :func:`torch_state_dict` move weights
between them.
"""

from flax_arch import _xla_cpu

_xla_cpu.apply()  # before anything starts JAX's backends: XLA reads XLA_FLAGS then

from flax_arch import layers  # noqa: E402
from flax_arch.conv import CausalConv1d, Conv1d, ConvMLP, ConvTranspose1d
from flax_arch.dense import MLP, LinearRegression, LogisticRegression, SoftmaxClassifier
from flax_arch.embedding import Embedding, OneHotLinear
from flax_arch.interop import (
    LoadReport,
    StateDictError,
    load_torch_state_dict,
    to_channels_first,
    to_channels_last,
    torch_state_dict,
)
from flax_arch.losses import task_loss, vae_loss
from flax_arch.recurrent import GRU, LSTM, RNN, RNNClassifier
from flax_arch.autoencoder import AE, VAE
from flax_arch.alexnet import AlexNet
from flax_arch.inception import BasicConv2d, GoogLeNet, Inception, InceptionAux
from flax_arch.qrnn import QRNN, QRNNLayer
from flax_arch.resnet import (
    BasicBlock,
    Bottleneck,
    ResLayer,
    ResNet,
    resnet101,
    resnet152,
    resnet18,
    resnet34,
    resnet50,
    resnext50_32x4d,
    wide_resnet50_2,
)
from flax_arch.densenet import (
    DenseNet,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
)
from flax_arch.unet import DoubleConv, UNet, UNetUp, unet_output_size
from flax_arch.segan import Conv1dGenerator, DownConv1dBlock, UpConv1dBlock
from flax_arch.dcgan import Discriminator, GANStepLosses, Generator, adversarial_step, dcgan_optimizers, init_dcgan_weights
from flax_arch.registry import get_entry, get_model, list_models, register

__all__ = [
    "layers",
    "LogisticRegression",
    "LinearRegression",
    "SoftmaxClassifier",
    "MLP",
    "OneHotLinear",
    "Embedding",
    "Conv1d",
    "CausalConv1d",
    "ConvMLP",
    "ConvTranspose1d",
    "RNN",
    "LSTM",
    "GRU",
    "RNNClassifier",
    "QRNNLayer",
    "QRNN",
    "AE",
    "VAE",
    "AlexNet",
    "BasicConv2d",
    "Inception",
    "InceptionAux",
    "GoogLeNet",
    "ResLayer",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "DenseNet",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "UNet",
    "DoubleConv",
    "UNetUp",
    "unet_output_size",
    "DownConv1dBlock",
    "UpConv1dBlock",
    "Conv1dGenerator",
    "Generator",
    "Discriminator",
    "init_dcgan_weights",
    "dcgan_optimizers",
    "adversarial_step",
    "GANStepLosses",
    "load_torch_state_dict",
    "torch_state_dict",
    "StateDictError",
    "LoadReport",
    "to_channels_last",
    "to_channels_first",
    "task_loss",
    "vae_loss",
    "list_models",
    "get_model",
    "get_entry",
    "register",
]
