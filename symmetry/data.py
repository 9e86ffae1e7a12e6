"""Old import path of the data layer, kept only for callers not yet moved; new code imports from the homes.

- :mod:`symmetry.decoders`: ``read_image``, ``pixel_limit``, ``IMAGE_EXTENSIONS``, ``CHANNELS``, ``LUMA_BT601``;
- :mod:`symmetry.sources`: ``ImageSource``, ``TransformedSource``, ``Dataset``, ``augment``, ``first_images``;
- :mod:`symmetry.download`: ``download_file``, ``sha256_file``, ``extract_folder``;
- :mod:`symmetry.datasets`: the catalogue (``load_dataset``, ``load_pairs``, ``list_datasets``) and
  ``data_root``, the one rule for where data lives.
"""

from symmetry.datasets import (
    DIV2K_FOLDERS,
    DIV2K_SHA256,
    DIV2K_URL,
    RAIN100L_SPLITS,
    SKIMAGE_IMAGES,
    SPLITS,
    data_root,
    list_datasets,
    load_dataset,
    load_pairs,
)
from symmetry.decoders import CHANNELS, IMAGE_EXTENSIONS, LUMA_BT601, MAX_IMAGE_PIXELS, pixel_limit, read_image
from symmetry.download import download_file
from symmetry.sources import Dataset, ImageSource, TransformedSource, augment, first_images

__all__ = [
    "CHANNELS",
    "DIV2K_FOLDERS",
    "DIV2K_SHA256",
    "DIV2K_URL",
    "IMAGE_EXTENSIONS",
    "LUMA_BT601",
    "MAX_IMAGE_PIXELS",
    "RAIN100L_SPLITS",
    "SKIMAGE_IMAGES",
    "SPLITS",
    "Dataset",
    "ImageSource",
    "TransformedSource",
    "augment",
    "data_root",
    "download_file",
    "first_images",
    "list_datasets",
    "load_dataset",
    "load_pairs",
    "pixel_limit",
    "read_image",
]
