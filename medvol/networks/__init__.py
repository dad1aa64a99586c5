"""Networks for 2D and 3D images: autoencoders, GAN generators and critics, conditioning, initialisation, and the
evaluation's classifier.

Every class takes `spatial_dims` (2 or 3); `medvol.networks.factory.build` assembles a model family (`medvol.families`)
by name.
"""

from medvol.networks.autoencoders import ConvAutoencoder, VariationalAutoencoder
from medvol.networks.blocks import (
    MinibatchStdDev,
    ResidualDownBlock,
    ResidualUpBlock,
    ResolutionPlan,
    count_parameters,
    has_batch_norm,
    plan_resolution,
)
from medvol.networks.classifiers import ResNetClassifier
from medvol.networks.conditioning import CriticHead, InputLabelEmbedding, LabelNoiseConcat
from medvol.networks.factory import build
from medvol.networks.gans import (
    Critic,
    DCGANDiscriminator,
    DCGANGenerator,
    FullyConnectedDiscriminator,
    FullyConnectedGenerator,
    Generator,
    ResidualCritic,
    ResidualGenerator,
)
from medvol.networks.init import init_dcgan_weights, init_kaiming_weights

__all__ = [
    "ConvAutoencoder",
    "Critic",
    "CriticHead",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "FullyConnectedDiscriminator",
    "FullyConnectedGenerator",
    "Generator",
    "InputLabelEmbedding",
    "LabelNoiseConcat",
    "MinibatchStdDev",
    "ResidualCritic",
    "ResidualDownBlock",
    "ResidualGenerator",
    "ResidualUpBlock",
    "ResNetClassifier",
    "ResolutionPlan",
    "VariationalAutoencoder",
    "build",
    "count_parameters",
    "has_batch_norm",
    "init_dcgan_weights",
    "init_kaiming_weights",
    "plan_resolution",
]
