"""Port a PyTorch module to Flax NNX: ``port(module, *example_inputs)``.

The module is traced with ``torch.fx``, once in train mode and once in eval mode (fx bakes a
forward's ``self.training`` branches in: torchvision's StochasticDepth, ``F.dropout(x, p,
self.training)``, GoogLeNet's auxiliary heads), and rebuilt as an NNX module whose children
mirror the torch submodules: every ``torch.nn`` leaf layer (dispatched on its exact type, so
that a subclass such as torchvision's ``LayerNorm2d`` is traced through) becomes the
``flax_arch`` layer of the same name, built from the torch layer's constructor arguments; every
other module becomes a :class:`TracedModule` holding its children and its own parameters and
buffers. The state tree is therefore the module's ``state_dict``, and the weights load through
the structural rules of :mod:`flax_arch.interop`. The graph runs with JAX operations, so the
port compiles under ``jit`` and differentiates like any hand-written model.

Layouts. Every tensor of the graph is held with a layout permutation ``p``: stored axis ``i``
holds torch axis ``p[i]``, so a channels-last value of torch shape (N, C, H, W) is stored
(N, H, W, C) with ``p = (0, 2, 3, 1)``. Operations that name dimensions map torch's dimension
through ``p`` (cat, reductions, softmax, chunk, slicing, pad, interpolate; permute and transpose
change only ``p``). Those whose meaning depends on the memory order (view/reshape, a flatten of
axes not stored together in order, matmul) first move the value to torch order; layers that
want channels-last (convolutions, batch norms, pools) move it back. Shape queries
(``x.size()``, ``x.shape``) answer in torch order, so the graph's shape arithmetic sees
torch's sizes. A flatten therefore flattens in torch's (C, H, W) order and a channel shuffle
comes out as torch's.

The package follows the stages: :mod:`.tracing` (the fx graph), :mod:`.translate` (the
graph as a program of JAX translations), :mod:`.ops` (the translations, one function per
torch op, by family: ``pointwise``, ``reduce``, ``shape``, ``nn``), :mod:`.leaves` (torch.nn
leaf layers as flax_arch layers), :mod:`.program` (the NNX modules that run the program),
:mod:`.build` (``port`` itself); :mod:`.tensor` holds the graph's values and layouts.

>>> import numpy as np, torch, torchvision
>>> from flax_arch import port
>>> net = torchvision.models.resnet18(weights=None).eval()
>>> flax_net = port(net, torch.zeros(1, 3, 64, 64))   # doctest: +SKIP
>>> flax_net(np.zeros((1, 64, 64, 3), np.float32)).shape   # doctest: +SKIP
(1, 1000)
"""

from .build import build_torch_module, port
from .program import Ported, TracedModule
from .tensor import PortError

__all__ = ["port", "PortError", "Ported", "TracedModule", "build_torch_module"]
