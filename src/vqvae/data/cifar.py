"""Deprecated: moved to :mod:`vqvae.data.images.cifar`, re-exported here for one release."""

import warnings

from vqvae.data.images.cifar import *  # noqa: F403
from vqvae.data.images.cifar import __all__  # noqa: F401

warnings.warn("vqvae.data.cifar is deprecated: use vqvae.data.images.cifar", DeprecationWarning, stacklevel=2)
