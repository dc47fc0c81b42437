"""Recipes on disk: the built-in YAML recipes (``vqvae.configs``) and recipe files, read into a validated
:mod:`vqvae.config` recipe with ``key=value`` overrides applied."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vqvae.config import RECIPE_KINDS, RecipeSections, recipe_from_dict
from vqvae.errors import VQVAEError

__all__ = ["builtin_recipes", "load_recipe", "recipe_with_overrides"]


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
        raise VQVAEError(f"recipe {spec} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise VQVAEError(f"recipe {spec} must be a mapping with sections model/train")
    return d
