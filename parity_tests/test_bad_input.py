"""Bad input gets a clear error naming what was expected; nothing is half-applied."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flax_arch
import torch_ref
from flax_arch import nn

R = nnx.Rngs(0)


@pytest.mark.parametrize("make,x,match", [
    (lambda: nn.Conv1d(4, 8, 3, rngs=R), np.ones((2, 4, 16)),
     r"\(batch, length, in_channels\) with 4 channels on the last axis; got shape \(2, 4, 16\)"),
    (lambda: nn.Conv2d(3, 8, 3, rngs=R), np.ones((2, 3, 16, 16)),
     r"\(batch, height, width, in_channels\) with 3 channels"),
    (lambda: nn.Conv2d(3, 8, 3, rngs=R), np.ones((16, 3)), r"got rank 2"),
    (lambda: nn.ConvTranspose1d(4, 8, 3, rngs=R), np.ones((2, 4, 5)), r"channels-last"),
    (lambda: nn.BatchNorm2d(5), np.ones((2, 5, 4, 4)),
     r"\(batch, height, width, channels\) with 5 channels"),
    (lambda: nn.BatchNorm1d(5), np.ones((2, 5, 4, 4)), r"\(batch, channels\) or"),
    (lambda: nn.Linear(5, 2, rngs=R), np.ones((2, 4)), r"in_features=5"),
    (lambda: nn.MaxPool2d(2), np.ones((4, 4)), r"\(batch, height, width, channels\)"),
    (lambda: nn.AdaptiveAvgPool2d(2), np.ones((4, 4)), r"got rank 2"),
    (lambda: flax_arch.MLP(16, 8, 4, rngs=R), np.ones((2, 15)), r"in_features=16"),
    (lambda: flax_arch.ConvMLP(16, 8, 4, rngs=R), np.ones((2, 16, 5)), r"16 channels"),
    (lambda: flax_arch.CausalConv1d(4, 8, 3, rngs=R), np.ones((4, 16)), r"\(batch, length"),
    (lambda: flax_arch.OneHotLinear(10, 3, rngs=R), np.ones((2, 9)), r"vocab_size=10"),
])
def test_wrong_layout_or_rank_names_the_layout_expected(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(jnp.asarray(x, jnp.float32))


def test_embedding_rejects_float_indices():
    with pytest.raises(TypeError, match="integer indices"):
        nn.Embedding(10, 3, rngs=R)(jnp.ones((2, 3)))


@pytest.mark.parametrize("make,match", [
    (lambda: nn.Conv1d(4, 6, 3, groups=4, rngs=R), r"groups=4 must .* divide"),
    (lambda: nn.Conv2d(3, 6, 3, groups=2, rngs=R), r"in_channels=3"),
    (lambda: nn.Conv1d(4, 8, 3, padding=-1, rngs=R), r"non-negative"),
    (lambda: nn.Conv1d(4, 8, 3, padding="full", rngs=R), r"'same', 'valid'"),
    (lambda: nn.Conv1d(4, 8, 3, stride=2, padding="same", rngs=R), r"stride 1"),
    (lambda: nn.Conv1d(4, 8, 0, rngs=R), r"kernel_size must be positive"),
    (lambda: nn.Conv1d(4, 8, 3, padding_mode="mirror", rngs=R), r"padding_mode must be"),
    (lambda: nn.Conv2d(4, 8, (3, 3, 3), rngs=R), r"tuple of 2 ints"),
    (lambda: nn.ConvTranspose1d(4, 8, 3, stride=2, output_padding=2, rngs=R),
     r"output_padding"),
    (lambda: nn.ConvTranspose1d(4, 8, 3, padding=-2, rngs=R), r"non-negative"),
    (lambda: nn.BatchNorm2d(4, momentum=1.5), r"momentum"),
    (lambda: nn.BatchNorm2d(0), r"positive"),
    (lambda: nn.Embedding(10, 3, padding_idx=10, rngs=R), r"padding_idx=10"),
    (lambda: nn.Embedding(10, 3, max_norm=-1.0, rngs=R), r"max_norm"),
    (lambda: nn.MaxPool2d(2, padding=2), r"at most half the kernel"),
    (lambda: nn.AvgPool2d(3, divisor_override=0), r"divisor_override"),
    (lambda: nn.AdaptiveAvgPool2d(0), r"output_size"),
    (lambda: nn.Dropout(1.5), r"between 0 and 1"),
    (lambda: flax_arch.MLP(0, 8, 3, rngs=R), r"positive"),
])
def test_impossible_hyperparameters_fail_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unknown_model_names_list_the_registered_ones():
    with pytest.raises(KeyError, match="registered: .*mlp"):
        flax_arch.get_model("mlpp", rngs=R)
    with pytest.raises(KeyError, match="registered: .*mlp"):
        torch_ref.get_model("mlpp")


def test_pool_window_larger_than_the_input_is_named():
    with pytest.raises(ValueError, match="larger than the padded input"):
        nn.MaxPool2d(5)(jnp.ones((1, 3, 3, 2)))
