"""Deprecated: moved to :mod:`vqvae.data.images.folder`, re-exported here for one release."""

import warnings

from vqvae.data.images.folder import *  # noqa: F403
from vqvae.data.images.folder import __all__  # noqa: F401

warnings.warn("vqvae.data.folder is deprecated: use vqvae.data.images.folder", DeprecationWarning, stacklevel=2)
