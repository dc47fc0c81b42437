"""Configuration: the architecture (``models.py`` for the autoencoders, ``priors.py`` for the priors) is kept
apart from the run (:class:`TrainConfig`, ``sections.py``); both are saved in every checkpoint, so evaluating
or sampling needs no flags. Recipes are YAML files (read by :mod:`vqvae.recipes`) with two sections, such as
``model:`` and ``train:``; overrides use dotted keys (``model.hidden=64 train.lr=3e-4``); :mod:`vqvae.recipes`
puts the sections of each kind of run together. Unknown keys, wrong types and non-finite numbers are rejected
with a message naming them."""

from vqvae.config.models import (
    MAX_CODES,
    QUANTIZERS,
    AudioModelConfig,
    ImageModelConfig,
    QuantizerConfig,
    WaveNetStack,
    check_field,
)
from vqvae.config.priors import PRIOR_KINDS, AudioPriorConfig, ImagePriorConfig
from vqvae.config.sections import TrainConfig, section_from_dict

__all__ = ["MAX_CODES", "PRIOR_KINDS", "QUANTIZERS", "AudioModelConfig", "AudioPriorConfig",
           "ImageModelConfig", "ImagePriorConfig", "QuantizerConfig", "TrainConfig", "WaveNetStack",
           "check_field", "section_from_dict"]
