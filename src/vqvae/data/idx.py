"""Deprecated: moved to :mod:`vqvae.data.images.idx`, re-exported here for one release."""

import warnings

from vqvae.data.images.idx import *  # noqa: F403
from vqvae.data.images.idx import __all__  # noqa: F401

warnings.warn("vqvae.data.idx is deprecated: use vqvae.data.images.idx", DeprecationWarning, stacklevel=2)
