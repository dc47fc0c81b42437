"""Deprecated: moved to :mod:`vqvae.models.audio` (import AudioVQVAE from vqvae or vqvae.models). Importing this
name gives that module itself, for one release."""

import importlib
import sys
import warnings

warnings.warn("vqvae.audio_model is deprecated: import AudioVQVAE from vqvae or vqvae.models", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("vqvae.models.audio")
