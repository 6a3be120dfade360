"""AlexNet, from the "Deep Classifiers/Regressors" slides, in Flax NNX.

x: (batch, height, width, 3) images, channels-last, height and width >= 63 (224 in the paper).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.models._checks import check_image_input
from flax_arch.nn import (
    AdaptiveAvgPool2d,
    Conv2d,
    Dropout,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Stochastic,
    flatten_chw,
)

__all__ = ["AlexNet"]

# The smallest input whose feature map survives the three 3x3/2 max-pools (torchvision's
# ``min_size`` of AlexNet).
MIN_SIZE = 63


class AlexNet(Stochastic):
    """Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NeurIPS 2012, in torchvision's single-tower form (64-192-384-256-256 channels).

    The slide's first version, with torchvision's module tree, so torchvision's ``AlexNet``
    ``state_dict`` loads structurally. (batch, height, width, 3) -> (batch, num_classes)
    logits. The dropout masks come from ``rngs`` (at construction, or at call time).
    ``hidden_features`` narrows the classifier's two 4096-wide layers (the twin's keyword).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, *,
                 hidden_features: int = 4096, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.features = Sequential(
            Conv2d(3, 64, kernel_size=11, stride=4, padding=2, **kw),
            ReLU(inplace=True),
            MaxPool2d(kernel_size=3, stride=2),
            Conv2d(64, 192, kernel_size=5, padding=2, **kw),
            ReLU(inplace=True),
            MaxPool2d(kernel_size=3, stride=2),
            Conv2d(192, 384, kernel_size=3, padding=1, **kw),
            ReLU(inplace=True),
            Conv2d(384, 256, kernel_size=3, padding=1, **kw),
            ReLU(inplace=True),
            Conv2d(256, 256, kernel_size=3, padding=1, **kw),
            ReLU(inplace=True),
            MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = AdaptiveAvgPool2d((6, 6))
        self.classifier = Sequential(
            Dropout(p=dropout, rngs=rngs),
            Linear(256 * 6 * 6, hidden_features, **kw),
            ReLU(inplace=True),
            Dropout(p=dropout, rngs=rngs),
            Linear(hidden_features, hidden_features, **kw),
            ReLU(inplace=True),
            Linear(hidden_features, num_classes, **kw),
        )

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        check_image_input("AlexNet", x, MIN_SIZE)
        # N x 224 x 224 x 3
        x = self.features(x)
        # N x 6 x 6 x 256
        x = self.avgpool(x)
        # N x 6 x 6 x 256 (whatever the input size)
        x = flatten_chw(x)
        # N x 9216, in torch's (C, H, W) order
        x = self.classifier(x, rngs=rngs)
        # N x num_classes
        return x
