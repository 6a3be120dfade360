"""Name -> PyTorch reference builder, the same names as :mod:`flax_arch.registry` (whose
entries carry the sizes, tasks and losses); the model files hold only models."""

from collections.abc import Callable
from functools import partial

from torch import nn

from torch_ref.alexnet import AlexNet
from torch_ref.autoencoder import AE, VAE
from torch_ref.conv import CausalConv1d, Conv1d, ConvMLP, ConvTranspose1d
from torch_ref.dcgan import Discriminator, Generator
from torch_ref.dense import LinearRegression, LogisticRegression, MLP, SoftmaxClassifier
from torch_ref.densenet import DenseNet
from torch_ref.embedding import Embedding, OneHotLinear
from torch_ref.inception import GoogLeNet, Inception
from torch_ref.qrnn import QRNN, QRNNLayer
from torch_ref.recurrent import GRU, LSTM, RNN, RNNClassifier
from torch_ref.resnet import Bottleneck, ResLayer, ResNet, resnet18
from torch_ref.segan import Conv1dGenerator, DownConv1dBlock, UpConv1dBlock
from torch_ref.unet import UNet

__all__ = ["register", "list_models", "get_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = builder


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Builds the registered model ``name`` with constructor ``kwargs``."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)


register("alexnet", AlexNet)
register("ae", AE)
register("vae", VAE)
register("conv1d", Conv1d)
register("causal_conv1d", CausalConv1d)
register("conv_mlp", ConvMLP)
register("conv_transpose1d", ConvTranspose1d)
register("dcgan_generator", Generator)
register("dcgan_discriminator", Discriminator)
register("logistic_regression", LogisticRegression)
register("linear_regression", LinearRegression)
register("softmax_classifier", SoftmaxClassifier)
register("mlp", MLP)
register("densenet121", DenseNet)
register("one_hot_linear", OneHotLinear)
register("embedding", Embedding)
register("inception", Inception)
register("googlenet", GoogLeNet)
register("qrnn_layer", QRNNLayer)
register("qrnn", QRNN)
register("rnn", RNN)
register("lstm", LSTM)
register("gru", GRU)
register("rnn_classifier", RNNClassifier)
register("res_layer", ResLayer)
register("resnet18", resnet18)
register("resnet_bottleneck", partial(ResNet, Bottleneck))
register("resnext", partial(ResNet, Bottleneck))
register("down_conv1d_block", DownConv1dBlock)
register("up_conv1d_block", UpConv1dBlock)
register("segan_generator", Conv1dGenerator)
register("unet", UNet)
