"""PyTorch references of the "Deep Architectures" lecture: the slides' code, bugs fixed.

Every class has a Flax NNX twin of the same name and state tree in :mod:`flax_arch`.
"""

from torch_ref.conv import CausalConv1d, Conv1d, ConvMLP, ConvTranspose1d
from torch_ref.dense import MLP, LinearRegression, LogisticRegression, SoftmaxClassifier
from torch_ref.embedding import Embedding, OneHotLinear
from torch_ref.losses import task_loss, vae_loss
from torch_ref.recurrent import GRU, LSTM, RNN, RNNClassifier
from torch_ref.autoencoder import AE, VAE
from torch_ref.alexnet import AlexNet
from torch_ref.inception import BasicConv2d, GoogLeNet, Inception, InceptionAux
from torch_ref.qrnn import QRNN, QRNNLayer
from torch_ref.resnet import (
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
from torch_ref.densenet import (
    DenseNet,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
)
from torch_ref.unet import DoubleConv, UNet, UNetUp, unet_output_size
from torch_ref.segan import Conv1dGenerator, DownConv1dBlock, UpConv1dBlock
from torch_ref.dcgan import Discriminator, GANStepLosses, Generator, adversarial_step, dcgan_optimizers, init_dcgan_weights
from torch_ref.registry import get_model, list_models, register

__all__ = [
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
    "task_loss",
    "vae_loss",
    "list_models",
    "get_model",
    "register",
]
