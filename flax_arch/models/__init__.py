"""The lecture's architectures, a family per file, each a pure NNX module written with the
leaf layers of :mod:`flax_arch.nn`; :mod:`torch_ref` has the same files and classes."""

from flax_arch.models.alexnet import AlexNet
from flax_arch.models.autoencoder import AE, VAE
from flax_arch.models.conv import CausalConv1d, Conv1d, ConvMLP, ConvTranspose1d
from flax_arch.models.dcgan import Discriminator, Generator, init_dcgan_weights
from flax_arch.models.dense import MLP, LinearRegression, LogisticRegression, SoftmaxClassifier
from flax_arch.models.densenet import DenseNet, densenet121, densenet161, densenet169, densenet201
from flax_arch.models.embedding import Embedding, OneHotLinear
from flax_arch.models.inception import BasicConv2d, GoogLeNet, Inception, InceptionAux
from flax_arch.models.qrnn import QRNN, QRNNLayer
from flax_arch.models.recurrent import GRU, LSTM, RNN, RNNClassifier
from flax_arch.models.resnet import (BasicBlock, Bottleneck, ResLayer, ResNet, resnet18,
                                     resnet34, resnet50, resnet101, resnet152, resnext50_32x4d,
                                     wide_resnet50_2)
from flax_arch.models.segan import Conv1dGenerator, DownConv1dBlock, UpConv1dBlock
from flax_arch.models.unet import DoubleConv, UNet, UNetUp, unet_output_size

__all__ = [
    "LogisticRegression", "LinearRegression", "SoftmaxClassifier", "MLP",
    "OneHotLinear", "Embedding",
    "RNN", "LSTM", "GRU", "RNNClassifier",
    "Conv1d", "CausalConv1d", "ConvMLP", "ConvTranspose1d",
    "QRNNLayer", "QRNN",
    "AE", "VAE",
    "AlexNet",
    "BasicConv2d", "Inception", "InceptionAux", "GoogLeNet",
    "ResLayer", "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50",
    "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2",
    "DenseNet", "densenet121", "densenet161", "densenet169", "densenet201",
    "UNet", "DoubleConv", "UNetUp", "unet_output_size",
    "DownConv1dBlock", "UpConv1dBlock", "Conv1dGenerator",
    "Generator", "Discriminator", "init_dcgan_weights",
]
