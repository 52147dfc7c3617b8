"""Model kind -> implementation, for loading a version whose manifest names its kind.
Implementations are imported on first use so loading popularity never imports LightGBM."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from models.base import Recommender
from models.errors import ArtifactError

KINDS: dict[str, tuple[str, str]] = {
    "popularity": ("models.popularity", "PopularityModel"),
    "als": ("models.als", "ALSModel"),
    "item-knn": ("models.knn", "ItemKNNModel"),
    "ease": ("models.ease", "EaseModel"),
    "als+lgbm": ("models.two_stage", "TwoStageModel"),
    # Causal self-attention over the user's item sequence; numpy inference, JAX training.
    "sasrec": ("models.sasrec", "SASRecModel"),
    # A random ranking: the negative control of canary rollouts (rollout tests, demos).
    "random": ("models.random_model", "RandomModel"),
}


def model_class(kind: str) -> type[Recommender]:
    try:
        module, cls = KINDS[kind]
    except KeyError:
        raise ArtifactError(
            f"unknown model kind {kind!r} (known: {', '.join(KINDS)})", kind=kind
        ) from None
    found: type[Recommender] = getattr(importlib.import_module(module), cls)
    return found


def model_from_artifacts(
    kind: str, files: Mapping[str, bytes], params: dict[str, Any]
) -> Recommender:
    """Rebuild a model of ``kind`` from its artifact files and manifest parameters."""
    return model_class(kind).from_artifacts(files, params)
