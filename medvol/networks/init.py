"""Weight initialisation."""

from __future__ import annotations

from torch import nn

_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def init_dcgan_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise as in the DCGAN paper: (transposed) convolution and linear weights ~ N(0, std), normalisation
    scales ~ N(1, std), every bias 0. Embeddings keep their own initialisation.

    Args:
        module: network to initialise in place (all its sub-modules).
        std: standard deviation (0.02 in the paper).

    Returns:
        `module`, for chaining.
    """
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORMS) and layer.weight is not None:
            nn.init.normal_(layer.weight, 1.0, std)
            nn.init.zeros_(layer.bias)
    return module


def init_kaiming_weights(module: nn.Module, negative_slope: float = 0.0) -> nn.Module:
    """He initialisation (normal, fan-in) for the (transposed) convolution and linear layers followed by a
    (leaky) ReLU, biases 0. It keeps activations from shrinking layer after layer, which otherwise stalls deep
    autoencoders on a constant output for hundreds of steps (seen in 3D).

    Args:
        module: network (or part of one) to initialise in place.
        negative_slope: slope of the LeakyReLU that follows the layers (0 for ReLU).

    Returns:
        `module`, for chaining.
    """
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            nn.init.kaiming_normal_(layer.weight, a=negative_slope, nonlinearity="leaky_relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
