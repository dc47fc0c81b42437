"""Recipes: the config sections of one kind of run together (:class:`ImageRecipe`,
:class:`ImagePriorRecipe`, :class:`AudioRecipe`, :class:`AudioPriorRecipe`; the sections are those of
:mod:`vqvae.config`), and recipes on disk: the built-in YAML recipes (``vqvae.configs``) and recipe files,
read into a validated recipe with ``key=value`` overrides applied."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vqvae.config import (
    AudioModelConfig,
    AudioPriorConfig,
    ImageModelConfig,
    ImagePriorConfig,
    TrainConfig,
    section_from_dict,
)
from vqvae.errors import VQVAEError

__all__ = ["RECIPE_KINDS", "AudioPriorRecipe", "AudioRecipe", "ImagePriorRecipe", "ImageRecipe",
           "RecipeSections", "builtin_recipes", "load_recipe", "recipe_from_dict", "recipe_with_overrides"]


class RecipeSections:
    """A recipe: dataclass fields that are config sections, each with its own ``validate``. The first section
    is the architecture, the last one ``train``."""

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def architecture(self) -> Any:
        """The architecture section (``model``, ``prior``, ``audio`` or ``wavenet_prior``)."""
        return getattr(self, dataclasses.fields(self)[0].name)

    def with_architecture(self, **changes: Any) -> RecipeSections:
        """A copy whose architecture section has ``changes`` (what training fills in from the data); the
        recipe itself is never changed.

        Args:
            **changes: architecture field -> new value (e.g. ``num_speakers``).

        Returns:
            The new recipe, of the same class.
        """
        name = dataclasses.fields(self)[0].name
        return dataclasses.replace(self, **{name: dataclasses.replace(self.architecture, **changes)})


@dataclass
class ImageRecipe(RecipeSections):
    """An image VQ-VAE recipe: sections ``model`` and ``train``."""

    model: ImageModelConfig = field(default_factory=ImageModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class ImagePriorRecipe(RecipeSections):
    """A prior recipe: sections ``prior`` and ``train`` (trained on the codes of its VQ-VAE's data)."""

    prior: ImagePriorConfig = field(default_factory=ImagePriorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class AudioRecipe(RecipeSections):
    """An audio VQ-VAE recipe: sections ``audio`` and ``train`` (``train.data``: a speaker-folder corpus)."""

    audio: AudioModelConfig = field(default_factory=AudioModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class AudioPriorRecipe(RecipeSections):
    """An audio prior recipe: sections ``wavenet_prior`` and ``train`` (trained on the VQ-VAE's codes)."""

    wavenet_prior: AudioPriorConfig = field(default_factory=AudioPriorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# recipe kind -> (class, its sections, the built-in recipe used when none is named)
RECIPE_KINDS = {"vqvae": (ImageRecipe, ("model", "train"), "fashion_mnist"),
                "prior": (ImagePriorRecipe, ("prior", "train"), "fashion_mnist_prior"),
                "audio": (AudioRecipe, ("audio", "train"), "speech"),
                "audio_prior": (AudioPriorRecipe, ("wavenet_prior", "train"), "speech_prior")}


def recipe_from_dict(d: dict[str, Any], kind: str = "vqvae") -> RecipeSections:
    """Build a recipe of ``kind`` from a dict of sections, rejecting unknown sections, keys and bad types.

    Args:
        d: section name -> its keys and values; a missing or empty section keeps its defaults.
        kind: a key of :data:`RECIPE_KINDS` (``vqvae``, ``prior``, ``audio`` or ``audio_prior``).

    Returns:
        The recipe (not validated: see its ``validate``).
    """
    cls, sections, _ = RECIPE_KINDS[kind]
    if not isinstance(d, dict):
        raise VQVAEError(f"a recipe must be a mapping with sections {'/'.join(sections)}, "
                         f"got {type(d).__name__}")
    unknown = sorted(set(d) - set(sections))
    if unknown:
        raise VQVAEError(f"unknown config section(s): {', '.join(unknown)} (known: {', '.join(sections)})")
    return cls(**{name: section_from_dict(name, d.get(name) or {}) for name in sections})


def builtin_recipes() -> list[str]:
    """The names of the built-in recipes (the YAML files of ``vqvae.configs``), sorted."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files("vqvae.configs").iterdir()
                  if p.name.endswith(".yaml"))


def load_recipe(spec: str | Path | None, overrides: list[str] = (), kind: str = "vqvae") -> RecipeSections:
    """Read a recipe of ``kind`` -- a YAML path, or the name of a built-in one (``fashion_mnist``) -- and
    apply ``key=value`` overrides (dotted keys, YAML values).

    Args:
        spec: a YAML file or a built-in recipe's name; None: the default recipe of ``kind``.
        overrides: ``section.key=value`` strings, applied in order.
        kind: the recipe kind: ``vqvae``, ``prior``, ``audio`` or ``audio_prior``.
    Returns:
        The validated recipe.
    Raises:
        VQVAEError: no such recipe or file, not a YAML mapping, or a malformed or invalid override.
    """
    return recipe_with_overrides(_read_yaml(spec if spec is not None else RECIPE_KINDS[kind][2]),
                                 overrides, kind)


def recipe_with_overrides(d: dict[str, Any], overrides: list[str] = (),
                          kind: str = "vqvae") -> RecipeSections:
    """A validated recipe from a ``{"model": ..., "train": ...}`` dict with ``key=value`` overrides applied.

    Args:
        d: the recipe's sections, ``{section: {key: value}}`` (not changed: its sections are copied).
        overrides: ``section.key=value`` strings; the value is read as YAML (as text when it is not YAML).
        kind: the recipe kind: ``vqvae``, ``prior``, ``audio`` or ``audio_prior``.
    Returns:
        The validated recipe.
    Raises:
        VQVAEError: an override not of the form ``section.key=value`` or of an unknown section, or a
            recipe that does not validate.
    """
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for item in overrides:
        if "=" not in item:
            raise VQVAEError(f"override {item!r} is not of the form section.key=value (e.g. train.lr=3e-4)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        sections = RECIPE_KINDS[kind][1]
        if len(parts) != 2 or parts[0] not in sections:
            raise VQVAEError(f"override key {key!r} must be {' or '.join(f'{n}.<key>' for n in sections)}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        d.setdefault(parts[0], {})[parts[1]] = value
    recipe = recipe_from_dict(d, kind)
    recipe.validate()
    return recipe


def _read_yaml(spec: str | Path) -> dict[str, Any]:
    path = Path(spec)
    if not path.suffix and not path.exists():
        if str(spec) not in builtin_recipes():
            raise VQVAEError(f"no recipe named {spec!r} (built-in: {', '.join(builtin_recipes())}) "
                             f"and no such file")
        text = resources.files("vqvae.configs").joinpath(f"{spec}.yaml").read_text()
    else:
        if not path.is_file():
            raise VQVAEError(f"recipe file not found: {path}")
        text = path.read_text()
    try:
        d = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise VQVAEError(f"recipe {spec} is not valid YAML{where}: {problem}") from None
    if not isinstance(d, dict):
        raise VQVAEError(f"recipe {spec} must be a mapping with sections model/train")
    return d
