"""Input checks shared by the architectures."""

import jax


def check_image_input(model: str, x: jax.Array, min_size: int) -> None:
    """Raises a ValueError naming the layout expected unless x is a channels-last batch of
    RGB images, (batch, height, width, 3), with height and width of at least ``min_size``
    (torchvision's ``min_size`` of the model)."""
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < min_size:
        raise ValueError(
            f"{model} expects a channels-last input of shape (batch, height, width, "
            f"channels=3) with height and width >= {min_size}; got shape {tuple(x.shape)}"
        )
