"""``flax_arch.port`` on torch's own module test database, in torch's layout
(``channels_last=False``): a class of each family here, every class in the slow test (and in
``python -m parity_tests.module_db_sweep``, whose results are module_db_sweep.md).

Each sample, in train and eval mode, float64: outputs, the state after the call, and the
gradients of every parameter and of the first input, to 1e-10 relative to torch's scale
(:func:`parity_tests.module_db_sweep.check`).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("expecttest")  # module_db imports it
from parity_tests import module_db_sweep as sweep  # noqa: E402

torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True

from flax_arch.port import PortError  # noqa: E402

INFOS = {info.module_cls.__name__: info for info in sweep.module_db}

# a class of each kind the port reaches: leaf layers on their own in torch's layout (batched
# and unbatched), 3-D convolutions, lazy layers, layers traced through to functional ops
# (Bilinear, the cells, the losses), attention
FAMILIES = ["Conv3d", "ConvTranspose3d", "LazyConv2d", "BatchNorm2d", "InstanceNorm1d",
            "Bilinear", "LSTMCell", "GRUCell", "CrossEntropyLoss", "MultiLabelMarginLoss",
            "MultiheadAttention"]
PER_MODE = 2  # samples per mode, spread over the class's list


def samples(info, training: bool, limit: int | None):
    found = info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                    requires_grad=False, training=training)
    if limit is None or len(found) <= limit:
        return found
    step = len(found) / limit
    return [found[int(i * step)] for i in range(limit)]


@pytest.mark.parametrize("name", FAMILIES)
def test_module_db_class_ports_and_matches(name):
    info = INFOS[name]
    for training in (True, False):
        for sample in samples(info, training, PER_MODE):
            kind, err = sweep.check(info, sample, training)
            assert kind == "match" and err <= sweep.TOL, (name, sample.desc, kind, err)


def test_a_wrong_number_is_caught(monkeypatch):
    """The check can fail: a 3-D convolution off by 1e-6 differs."""
    from jax import lax

    from flax_arch.port.ops import nn as nn_ops

    class OffByOneMillionth:
        def __getattr__(self, name):
            return getattr(lax, name)

        @staticmethod
        def conv_general_dilated(*args, **kwargs):
            return lax.conv_general_dilated(*args, **kwargs) + 1e-6

    monkeypatch.setattr(nn_ops, "lax", OffByOneMillionth())
    info = INFOS["Conv3d"]
    with pytest.raises(sweep.Wrong, match="output 0: error"):
        sweep.check(info, samples(info, False, 1)[0], False)


def test_ctc_loss_is_refused_by_name():
    info = INFOS["CTCLoss"]
    with pytest.raises(PortError, match=r"torch\.nn\.functional\.ctc_loss at node"):
        sweep.check(info, samples(info, False, 1)[0], False)


@pytest.mark.slow
def test_every_module_db_class_matches_or_is_refused():
    results = sweep.sweep()
    outcomes = [r[0].split(" ")[0] for r in results.values()]
    assert outcomes.count("WRONG") == 0 and outcomes.count("CRASH") == 0, results
    assert outcomes.count("match") >= 0.95 * len(results), results
