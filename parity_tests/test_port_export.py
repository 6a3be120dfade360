"""The torch.export fallback of :func:`flax_arch.port`: Hugging Face transformers models,
which torch.fx cannot trace, built from tiny configs (2 layers, hidden 32, no download),
ported through torch.export's ATen graph and proven equal in float64; their outputs keep the
fields of transformers' ``ModelOutput`` by name.

Llama and T5 compute islands in float32 inside a float64 model (RMSNorm casts to float32,
rotary embeddings are computed in float32): there torch's float32 ``mean`` and ``cos`` /
``sin`` round differently from XLA's by an ulp (1e-7 of the output), which the port cannot
reproduce; the port's ``rsqrt`` rounds as torch's does (``1 / sqrt``). Run with those casts
redirected to float64 (:func:`parity_tests.zoo_sweep.float64_throughout`, on both sides) the
models match at float64's rounding.

transformers is in the ``zoo`` extra, not the test extra (130 MB installed, and its releases
move with torch's): its tests skip without it. The export path's own ops and refusals are
tested without it, on small modules ported through torch.export as fx-untraceable models
are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flax_arch import port
from flax_arch.port import PortError, build, tracing
from flax_arch.testing import assert_parity
from parity_tests.zoo_sweep import float64_throughout

try:  # the zoo extra, not the test extra (130 MB): its tests skip without it
    import transformers as tf
except ImportError:
    tf = None
needs_transformers = pytest.mark.skipif(tf is None, reason="transformers is not installed "
                                        "(pip install -e .[zoo])")

SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=64)


def _ids():
    return torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))


def _bert(**kw):
    return tf.BertModel(tf.BertConfig(**SMALL, **kw))


def _gpt2():
    return tf.GPT2Model(tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2,
                                      use_cache=False))


def _llama():
    return tf.LlamaModel(tf.LlamaConfig(**SMALL, num_key_value_heads=1, use_cache=False))


def _t5():
    return tf.T5EncoderModel(tf.T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64,
                                         num_layers=2, num_heads=2))


def _built(make):
    torch.manual_seed(0)
    model = make().double().eval()
    with torch.no_grad():  # order-one outputs: a random scale on every parameter
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _worst(ours, ref) -> float:
    scale = max(1.0, float(ref.abs().max()))
    return float(np.max(np.abs(np.asarray(ours) - ref.numpy()))) / scale


@needs_transformers
@pytest.mark.parametrize("make", [_bert, _gpt2], ids=["bert", "gpt2"])
def test_encoder_and_decoder_match_with_modeloutput_fields(make):
    model, ids = _built(make), _ids()
    ported = port(model, ids, channels_last=False)
    with torch.no_grad():
        ref = model(ids)
    out = ported(ids.numpy())
    assert list(out) == list(ref.keys())  # the ModelOutput's fields, by name, in order
    for name in ref.keys():
        assert _worst(out[name], ref[name]) <= 1e-10, name


@needs_transformers
@pytest.mark.parametrize("make", [_llama, _t5], ids=["llama", "t5-encoder"])
def test_float32_islands_differ_by_float32_rounding_and_match_in_float64(make):
    ids = _ids()
    model = _built(make)
    ported = port(model, ids, channels_last=False)
    with torch.no_grad():
        ref = model(ids).last_hidden_state
    as_designed = _worst(ported(ids.numpy())["last_hidden_state"], ref)
    # an ulp of float32 at a few ops, carried through 2 layers; no float64 slip is this small
    assert 1e-8 < as_designed < 4 * np.finfo(np.float32).eps
    with float64_throughout():
        ported = port(model, ids, channels_last=False)
        with torch.no_grad():
            ref = model(ids).last_hidden_state
    assert _worst(ported(ids.numpy())["last_hidden_state"], ref) <= 1e-10


def test_rsqrt_rounds_as_torch_under_jit():
    import jax

    class Rsqrt(torch.nn.Module):
        def forward(self, x):
            return torch.rsqrt(x)

    x = torch.from_numpy(np.exp(np.random.default_rng(0).uniform(-20, 20, 4096))
                         .astype(np.float32))
    ours = np.asarray(jax.jit(port(Rsqrt(), x))(x.numpy()))
    np.testing.assert_array_equal(ours, torch.rsqrt(x).numpy())


@needs_transformers
def test_train_mode_forward_and_gradients():
    model = _built(lambda: _bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    ids = _ids()
    ported = port(model.train(), ids, channels_last=False)
    # outputs (batch, seq, hidden) and (batch, hidden): no channels axis to move. The
    # optimizer steps compile two more programs (+15 s even at one layer): the zoo sweep's
    # --train runs them
    report = assert_parity(ported, model, ids.numpy(), train=True,
                           output_layouts=("NLC", "NC"), checks=("forward", "grad"))
    assert set(report.largest()) == {"forward", "grad"}


@pytest.fixture
def export_only(monkeypatch):
    """port through torch.export, as for a model that torch.fx cannot trace."""
    monkeypatch.setattr(build, "_trace", lambda module, inputs: tracing._export(module, inputs))


class Repeats(torch.nn.Module):
    def forward(self, x):  # (2, 2) -> (2, 6), (2, 3), (8,), (2, 2)
        y = x.repeat_interleave(3, dim=1)
        w = torch.zeros(2, 6, dtype=x.dtype)
        w.copy_(y * 2)  # in place: the sum below reads the copy
        counts = torch.tensor([1, 2])  # a tensor of counts: a size torch.export keeps symbolic
        return (y + w, torch.repeat_interleave(x, counts, dim=1), x.repeat_interleave(2),
                1.0 - x)  # aten.rsub


def test_export_graph_ops_copy_repeat_interleave_rsub_symbolic_size(export_only):
    x = torch.randn(2, 2, dtype=torch.float64)
    ours = port(Repeats(), x, channels_last=False)(x.numpy())
    for o, r in zip(ours, Repeats()(x), strict=True):
        np.testing.assert_array_equal(np.asarray(o), r.numpy())


def test_a_higher_order_op_is_refused_by_name(export_only):
    class Autocast(torch.nn.Module):
        def forward(self, x):
            with torch.autocast("cpu", enabled=False):
                return x.float() * 2

    with pytest.raises(PortError, match="wrap_with_autocast") as err:
        port(Autocast(), torch.ones(2, 2), channels_last=False)
    assert "the body of a higher-order op" in str(err.value)


class WriteThroughView(torch.nn.Module):
    def forward(self, x):  # (2, 3) -> (2, 3): ConViT's rel_indices[:, :, :, 2] = ...
        z = torch.zeros(2, 3, dtype=x.dtype)
        z[:, 0].copy_(x[:, 0])  # torch writes into z through the view
        return z * 2


@pytest.mark.parametrize("through_export", [False, True], ids=["fx", "export"])
def test_a_write_through_a_view_is_refused(through_export, monkeypatch):
    if through_export:
        monkeypatch.setattr(build, "_trace", lambda m, inputs: tracing._export(m, inputs))
    with pytest.raises(PortError, match="in-place copy_ into a view of 'zeros'.*node 'mul'"):
        port(WriteThroughView(), torch.ones(2, 3), channels_last=False)
