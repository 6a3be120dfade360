"""The fully-connected, embedding and convolution slides: every printed shape, reproduced on
the Flax side (channels-last), and the equivalences the slides argue."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import flax_arch
from flax_arch import nn

RNGS = nnx.Rngs(0)


def test_one_hot_linear_slide_shapes():
    emb_1 = flax_arch.OneHotLinear(10000, 100, rngs=RNGS)
    x = jnp.asarray([[1.0] + [0.0] * 9999] * 10)
    assert x.shape == (10, 10000)
    assert emb_1(x).shape == (10, 100)


def test_embedding_slide_shapes():
    emb_2 = flax_arch.Embedding(10000, 100, rngs=RNGS)
    x = jnp.zeros((10, 1), jnp.int32)
    assert emb_2(x).shape == (10, 1, 100)


def test_conv1d_slide_shapes():
    x = jnp.ones((1, 8, 1))  # torch's (1, 1, 8), channels-last
    assert flax_arch.Conv1d(1, 1024, 3, rngs=RNGS)(x).shape == (1, 6, 1024)
    assert flax_arch.Conv1d(1, 1024, 3, padding=3 // 2, rngs=RNGS)(x).shape == (1, 8, 1024)


def test_causal_conv1d_slide_shapes_and_causality():
    conv = flax_arch.CausalConv1d(1, 1024, 3, rngs=RNGS)
    x = jax.random.normal(jax.random.key(0), (1, 8, 1))
    y = conv(x)
    assert y.shape == (1, 8, 1024)
    # changing the input at time 5 changes no output before time 5
    y2 = conv(x.at[0, 5, 0].add(1.0))
    np.testing.assert_array_equal(y[:, :5], y2[:, :5])
    assert not np.allclose(y[:, 5], y2[:, 5])


def test_conv_mlp_slide_shapes():
    mlp = flax_arch.ConvMLP(100, 1024, 20, rngs=RNGS)
    assert mlp(jnp.ones((1, 1, 100))).shape == (1, 1, 20)  # torch's (1, 100, 1) -> (1, 20, 1)


def test_conv_transpose1d_slide_shapes():
    deconv = flax_arch.ConvTranspose1d(1, 1, 8, stride=4, rngs=RNGS)
    assert deconv(jnp.ones((1, 2, 1))).shape == (1, 12, 1)  # torch's (1, 1, 2) -> (1, 1, 12)


def test_mlp_and_classifier_slide_shapes():
    x = jnp.ones((3, 100))
    assert flax_arch.MLP(rngs=RNGS)(x).shape == (3, 20)
    assert flax_arch.LogisticRegression(100, rngs=RNGS)(x).shape == (3, 1)
    assert flax_arch.LinearRegression(100, rngs=RNGS)(x).shape == (3, 1)
    assert flax_arch.SoftmaxClassifier(100, 7, rngs=RNGS)(x).shape == (3, 7)


def test_one_hot_linear_equals_embedding_lookup_with_the_same_weights():
    """The slide's point: a Linear layer over one-hot rows selects rows of its weight matrix,
    which is what the Embedding lookup does without the product."""
    vocab, hidden = 50, 8
    linear = flax_arch.OneHotLinear(vocab, hidden, bias=False, rngs=nnx.Rngs(1),
                                    param_dtype=jnp.float64)
    emb = flax_arch.Embedding(vocab, hidden, rngs=nnx.Rngs(2), param_dtype=jnp.float64)
    emb.weight[...] = linear.weight[...]  # both stored (vocab_size, hidden_size)
    idx = np.random.default_rng(0).integers(0, vocab, (6, 7))
    one_hot = jax.nn.one_hot(idx, vocab, dtype=jnp.float64)
    np.testing.assert_array_equal(linear(one_hot), emb(jnp.asarray(idx)))


def test_conv_mlp_equals_the_mlp_swept_over_time():
    """Kernel-1 convolutions are a fully connected layer applied at every time step."""
    kw = dict(num_inputs=6, hidden_size=16, num_outputs=5, param_dtype=jnp.float64)
    conv_mlp = flax_arch.ConvMLP(**kw, rngs=nnx.Rngs(1))
    mlp = flax_arch.MLP(**kw, rngs=nnx.Rngs(2))
    for i in (0, 2, 4):
        mlp[i].weight[...] = conv_mlp[i].weight[...][0]  # (1, in, out) -> (in, out)
        mlp[i].bias[...] = conv_mlp[i].bias[...]
    x = jax.random.normal(jax.random.key(0), (3, 11, 6), jnp.float64)  # (batch, time, features)
    swept = jax.vmap(mlp, in_axes=1, out_axes=1)(x)
    np.testing.assert_allclose(conv_mlp(x), swept, rtol=0, atol=1e-12)


def test_all_registered_models_build_at_bench_size_abstractly():
    """The benchmark configurations are valid: every model traces at its bench size."""
    for name in flax_arch.list_models():
        entry = flax_arch.get_entry(name)
        _, flax_in, _ = entry.example_inputs("bench", batch_size=2)
        model = nnx.eval_shape(lambda: entry.build("bench", rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(model)
        out = jax.eval_shape(lambda s, *xs: nnx.merge(graphdef, s)(*xs), state, *flax_in)
        assert jax.tree.leaves(out), name
        assert isinstance(model, nnx.Module)
