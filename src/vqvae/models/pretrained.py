"""One way to save and load every model of this package: a directory with ``config.json`` (the
architecture under its section name, the ``kind`` of checkpoint, and whatever the run adds) and
``model.safetensors``. Every model class registers its kind here when it is defined, so that a run directory
is loaded by the kind it records (:func:`model_class`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch

from vqvae import checkpoint
from vqvae.config import section_from_dict
from vqvae.errors import VQVAEError

__all__ = ["Pretrained", "model_class"]

_KINDS: dict[str, type] = {}


class Pretrained:
    """Mixin for an ``nn.Module`` built from one config dataclass, ``self.config``.

    Subclasses name the ``checkpoint_kind`` written to config.json (what ``from_pretrained`` insists on) and
    the ``config_section`` the architecture is stored under (the recipe section of the same name)."""

    checkpoint_kind: ClassVar[str]
    config_section: ClassVar[str]
    #: SHA-256 of the weights file the model was loaded from (None when built in memory): what cached codes
    #: and priors are tied to.
    weights_sha256: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("checkpoint_kind")
        if kind is not None:
            if _KINDS.get(kind, cls) is not cls:
                raise TypeError(f"two model classes for the checkpoint kind {kind!r}: "
                                f"{_KINDS[kind]} and {cls}")
            _KINDS[kind] = cls

    @classmethod
    def config_from_dict(cls, values: dict[str, Any]) -> Any:
        """The architecture config from its config.json section (unknown keys and bad types refused).

        Args:
            values: the ``config_section`` part of config.json.
        Returns:
            the config dataclass of this model class.
        Raises:
            VQVAEError: an unknown key or a value of the wrong type.
        """
        return section_from_dict(cls.config_section, values)

    @classmethod
    def build_from_config(cls, config: Any) -> Any:
        """The model ``from_pretrained`` builds from the stored architecture: ``cls(config)`` (a family of
        networks under one checkpoint kind picks its member here).

        Args:
            config: the architecture config.
        Returns:
            the model, not yet loaded.
        """
        return cls(config)

    def checkpoint_config(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What ``config.json`` holds: the kind, the architecture and ``extra`` (e.g. the run's recipe).

        Args:
            extra: further top-level keys to store; None for none.
        Returns:
            the dict ``{"kind": ..., config_section: ..., **extra}``.
        """
        return {"kind": self.checkpoint_kind, self.config_section: dataclasses.asdict(self.config),
                **(extra or {})}

    def save_pretrained(self, directory: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``config.json`` (architecture + ``extra``, e.g. the run's recipe), ``model.safetensors`` and
        the ``manifest.json`` that makes them one checkpoint.

        Args:
            directory: the checkpoint directory to write.
            extra: further top-level keys for ``config.json``; None for none.
        """
        checkpoint.save_model(directory, self.checkpoint_config(extra), self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Any:
        """The model saved in ``directory``, on ``map_location``, in eval mode, with ``weights_sha256`` set.

        Args:
            directory: a checkpoint directory written by :meth:`save_pretrained`.
            map_location: device to move the model to (default the CPU).
        Returns:
            the loaded model, an instance of this class.
        Raises:
            VQVAEError: ``directory`` is not a checkpoint of this kind, or its weights do not match its
                config.
        """
        config = checkpoint.read_config(directory, kind=cls.checkpoint_kind)
        section = config.get(cls.config_section, {})
        model = cls.build_from_config(cls.config_from_dict(section))
        try:
            model.weights_sha256 = checkpoint.load_weights(model, directory)
        except VQVAEError as exc:
            missing = [f.name for f in dataclasses.fields(model.config) if f.name not in section]
            # the defaults stood in for them, and the weights say they were not the values trained
            if missing:
                raise VQVAEError(f"{Path(directory) / checkpoint.CONFIG} lacks {cls.config_section}."
                                 f"{', '.join(missing)}: {exc}") from None
            raise
        return model.to(map_location).eval()


def model_class(kind: str) -> type[Pretrained]:
    """The model class of checkpoint ``kind``.

    Args:
        kind: a checkpoint kind (``vqvae``, ``prior``, ``audio``, ``audio_prior``, ``classifier``).
    Returns:
        the registered :class:`Pretrained` subclass.
    Raises:
        VQVAEError: no class is registered for ``kind``.
    """
    if kind not in _KINDS:
        raise VQVAEError(f"no model class is registered for checkpoint kind {kind!r} "
                         f"(known: {', '.join(sorted(_KINDS))})")
    return _KINDS[kind]
