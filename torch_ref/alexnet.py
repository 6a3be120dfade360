"""AlexNet, from the "Deep Classifiers/Regressors" slides, as a PyTorch reference.

x: (batch, 3, height, width) images, height and width >= 63 (224 in the paper).
"""

import torch
from torch import Tensor, nn


__all__ = ["AlexNet"]


class AlexNet(nn.Module):
    """Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NeurIPS 2012, in torchvision's single-tower form (64-192-384-256-256 channels).

    The slide's first version, which is torchvision's ``AlexNet``: the same module tree and
    ``state_dict`` keys (``features.0.weight``, ``classifier.1.weight``, ...) and the same
    ``dropout`` argument. (batch, 3, height, width) -> (batch, num_classes) logits.
    ``hidden_features`` (keyword-only, not torchvision's) narrows the classifier's two
    4096-wide layers, whose 54M of the 61M parameters tests need not pay for.

    The slide's second version is broken and not reproduced: it puts the Linear layers
    inside ``features`` (a Linear(9216, 4096) applied to a (N, 256, H, W) feature map), its
    ``forward`` uses ``self.avgpool`` and ``self.classifier``, which it never defines, and
    its extra padded max-pools leave a 256 x 4 x 4 map at 224 x 224, not the 256 x 6 x 6 its
    ``view(x.size(0), 256 * 6 * 6)`` expects.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, *,
                 hidden_features: int = 4096):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, hidden_features),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_features, hidden_features),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_features, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        # N x 3 x 224 x 224
        x = self.features(x)
        # N x 256 x 6 x 6
        x = self.avgpool(x)
        # N x 256 x 6 x 6 (whatever the input size)
        x = torch.flatten(x, 1)
        # N x 9216
        x = self.classifier(x)
        # N x num_classes
        return x
