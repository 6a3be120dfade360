"""Discrete inputs, from the "Embedding layer" slides, as PyTorch references.

``OneHotLinear`` is the slide's ``nn.Linear(VOCAB_SIZE, HIDDEN_SIZE)`` over one-hot rows;
``Embedding`` is ``torch.nn.Embedding``, the lookup that selects the same rows without the
matrix product.
"""

from torch import Tensor, nn


__all__ = ["OneHotLinear", "Embedding"]

Embedding = nn.Embedding


class OneHotLinear(nn.Linear):
    """A Linear layer over one-hot rows. x: (batch, vocab_size) -> (batch, hidden_size).

    With ``bias=False`` it equals ``Embedding(vocab_size, hidden_size)`` whose ``weight`` is
    this layer's ``weight.T``.
    """

    def __init__(self, vocab_size: int, hidden_size: int, bias: bool = True):
        super().__init__(vocab_size, hidden_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"OneHotLinear expects one-hot rows of shape (*, vocab_size={self.in_features}); "
                f"got {tuple(x.shape)}"
            )
        return super().forward(x)
