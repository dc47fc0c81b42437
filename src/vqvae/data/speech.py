"""Deprecated: moved to :mod:`vqvae.data.audio.synthesis`, re-exported here for one release."""

import warnings

from vqvae.data.audio.synthesis import *  # noqa: F403
from vqvae.data.audio.synthesis import __all__  # noqa: F401

warnings.warn("vqvae.data.speech is deprecated: use vqvae.data.audio.synthesis", DeprecationWarning, stacklevel=2)
