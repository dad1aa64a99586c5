"""medvol: synthetic volumetric (3D) and slice-wise (2D) medical images on top of MONAI."""

__version__ = "0.1.0"
