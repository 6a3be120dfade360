"""The Quasi-Recurrent Neural Network of the "Quasi Recurrent Neural Network" slides, in PyTorch.

Bradbury, Merity, Xiong & Socher 2016, "Quasi-Recurrent Neural Networks" (arXiv:1611.01576).
``QRNNLayer`` ports the slide's ``fQRNNLayer`` (a causal convolution, then a Python loop over
time), extended to fo- and ifo-pooling and zoneout, and ``QRNN`` stacks it; the Flax twins in
:mod:`flax_arch.models.qrnn` document the mathematics (pooling, gate order z, f, o, i, zoneout).
Layouts, as on the slide: x (batch, seq, features), the state (batch, hidden).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


__all__ = ["QRNNLayer", "QRNN"]

POOLINGS = {"f": 2, "fo": 3, "ifo": 4}  # gate chunks, in the order z, f, o, i


def _check_hparams(name: str, num_inputs: int, num_outputs: int, kwidth: int, pooling: str,
                   zoneout: float) -> None:
    if num_inputs <= 0 or num_outputs <= 0:
        raise ValueError(f"{name}: sizes must be positive, got num_inputs={num_inputs}, "
                         f"hidden size={num_outputs}")
    if kwidth < 1:
        raise ValueError(f"{name}: kwidth must be >= 1 (the causal convolution's width), "
                         f"got {kwidth}")
    if pooling not in POOLINGS:
        raise ValueError(f"{name}: pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
    if not 0.0 <= zoneout < 1.0:
        raise ValueError(f"{name}: zoneout must be in [0, 1), got {zoneout}")


class QRNNLayer(nn.Module):
    """One QRNN layer (Bradbury et al. 2016): a causal convolution, then f-, fo- or ifo-pooling.

    x: (batch, seq, num_inputs), state: (batch, num_outputs) or None (zeros)
    -> (hts (batch, seq, num_outputs), h_T (batch, num_outputs)). For 'fo' and 'ifo' the state
    carried (given and returned) is the memory ``c``; the outputs are ``h = o * c``.

    Bugs of the slide's ``fQRNNLayer`` fixed here: its ``nn.Conv2d`` is a 1-D convolution over
    time, ``nn.Conv1d``; its zero state ``torch.zeros(...)`` is created on the CPU in the default
    dtype, here on the input's device and dtype.
    """

    def __init__(self, num_inputs: int, num_outputs: int, kwidth: int = 2, pooling: str = "f",
                 zoneout: float = 0.0):
        super().__init__()
        _check_hparams("QRNNLayer", num_inputs, num_outputs, kwidth, pooling, zoneout)
        self.num_inputs = num_inputs
        self.num_outputs = num_outputs
        self.kwidth = kwidth
        self.pooling = pooling
        self.zoneout = zoneout
        # all gate feature maps from the same conv layer: z, f[, o][, i] stacked on channels
        self.conv = nn.Conv1d(num_inputs, num_outputs * POOLINGS[pooling], kwidth)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.dim() != 3 or x.size(-1) != self.num_inputs or x.size(1) < 1:
            raise ValueError(
                f"QRNNLayer expects x of shape (batch, seq, num_inputs={self.num_inputs}) with "
                f"seq >= 1; got shape {tuple(x.shape)}"
            )
        if state is not None and tuple(state.shape) != (x.size(0), self.num_outputs):
            raise ValueError(
                f"QRNNLayer expects state of shape (batch={x.size(0)}, num_outputs="
                f"{self.num_outputs}); got shape {tuple(state.shape)}"
            )
        # ----- FEED FORWARD PART: causal convolution, all gates at once
        x = x.transpose(1, 2)  # N x C_in x L
        xp = F.pad(x, (self.kwidth - 1, 0))  # N x C_in x (L + kwidth - 1)
        conv_h = self.conv(xp)  # N x (k * H) x L
        zt, ft, *rest = torch.chunk(conv_h, POOLINGS[self.pooling], dim=1)  # N x H x L each
        zt, ft = torch.tanh(zt), torch.sigmoid(ft)
        # the recurrence c_t = a_t * c_{t-1} + b_t
        if self.pooling == "ifo":
            at, bt = ft, torch.sigmoid(rest[1]) * zt
        else:
            at, bt = ft, (1 - ft) * zt
        at, bt = self._zoneout(at, bt)  # N x H x L each
        # ----- SEQUENTIAL PART: iterate through time
        if state is None:
            ct_1 = torch.zeros(x.size(0), self.num_outputs, 1, dtype=at.dtype, device=at.device)
        else:
            ct_1 = state.to(at.dtype).unsqueeze(2)  # N x H x 1
        ats = torch.chunk(at, at.size(2), dim=2)
        bts = torch.chunk(bt, bt.size(2), dim=2)
        cts = []
        for t in range(at.size(2)):
            ct = ats[t] * ct_1 + bts[t]  # N x H x 1
            cts.append(ct)
            ct_1 = ct
        cts = torch.cat(cts, dim=2)  # N x H x L
        hts = cts if self.pooling == "f" else torch.sigmoid(rest[0]) * cts  # N x H x L
        return hts.transpose(1, 2), ct_1.squeeze(2)  # N x L x H, N x H

    def _zoneout(self, at: Tensor, bt: Tensor) -> tuple[Tensor, Tensor]:
        p = self.zoneout
        if p == 0.0:
            return at, bt
        if not self.training:  # the expectation of the train-mode gates
            return 1 - (1 - p) * (1 - at), (1 - p) * bt
        keep = torch.bernoulli(torch.full_like(at, 1 - p)).bool()  # N x H x L
        return (torch.where(keep, at, torch.ones_like(at)),
                torch.where(keep, bt, torch.zeros_like(bt)))


class QRNN(nn.Module):
    """A stack of QRNN layers (Bradbury et al. 2016), with dropout between layers in train mode.

    x: (batch, seq, num_inputs), state: (num_layers * num_directions, batch, hidden_size) or
    None -> (output (batch, seq, num_directions * hidden_size),
    h_n (num_layers * num_directions, batch, hidden_size)).

    ``layers[l * num_directions + d]`` is layer ``l`` in direction ``d`` (0 forward, 1
    reverse), the index of its state in ``h_n`` (torch's ``nn.LSTM`` order); state_dict keys
    are ``layers.{l * num_directions + d}.conv.weight`` / ``.conv.bias``. A reverse layer runs
    over the time-reversed sequence; outputs are concatenated along features, forward first.
    """

    def __init__(self, num_inputs: int, hidden_size: int, num_layers: int = 1, kwidth: int = 2,
                 pooling: str = "f", zoneout: float = 0.0, dropout: float = 0.0,
                 bidirectional: bool = False):
        super().__init__()
        _check_hparams("QRNN", num_inputs, hidden_size, kwidth, pooling, zoneout)
        if num_layers < 1:
            raise ValueError(f"QRNN: num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"QRNN: dropout must be in [0, 1], got {dropout}")
        self.num_inputs = num_inputs
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout
        self.layers = nn.ModuleList([
            QRNNLayer(num_inputs if layer == 0 else hidden_size * self.num_directions,
                      hidden_size, kwidth, pooling, zoneout)
            for layer in range(num_layers) for _ in range(self.num_directions)
        ])
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.dim() != 3 or x.size(-1) != self.num_inputs:
            raise ValueError(
                f"QRNN expects x of shape (batch, seq, num_inputs={self.num_inputs}); got shape "
                f"{tuple(x.shape)}"
            )
        dirs = self.num_directions
        want = (self.num_layers * dirs, x.size(0), self.hidden_size)
        if state is not None and tuple(state.shape) != want:
            raise ValueError(
                f"QRNN expects state of shape (num_layers * num_directions={want[0]}, "
                f"batch={want[1]}, hidden_size={want[2]}); got shape {tuple(state.shape)}"
            )
        h_n = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                i = layer * dirs + d
                s = None if state is None else state[i]  # N x H
                xd = x if d == 0 else torch.flip(x, dims=(1,))  # N x L x C
                hts, h_T = self.layers[i](xd, s)  # N x L x H, N x H
                outs.append(hts if d == 0 else torch.flip(hts, dims=(1,)))
                h_n.append(h_T)
            x = torch.cat(outs, dim=2)  # N x L x (dirs * H)
            if layer < self.num_layers - 1:
                x = self.drop(x)
        return x, torch.stack(h_n)  # N x L x (dirs * H), (layers * dirs) x N x H
