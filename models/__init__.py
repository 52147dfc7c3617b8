"""Recommendation models and their registry.

Public API: the :class:`Recommender` contract, its implementations, :func:`model_from_artifacts`
and :class:`ModelRegistry`. Implementations needing LightGBM load lazily (attribute access).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.als import ALSModel
from models.base import Recommender, UserItems
from models.errors import (
    AliasConflict,
    AliasError,
    ArtifactError,
    IntegrityError,
    ModelError,
    RegistryError,
    VersionNotFound,
)
from models.kinds import model_from_artifacts
from models.popularity import PopularityModel
from models.registry import ModelRegistry

if TYPE_CHECKING:
    from models.knn import ItemKNNModel
    from models.ranker import Ranker
    from models.two_stage import TwoStageModel

__all__ = [
    "ALSModel",
    "AliasConflict",
    "AliasError",
    "ArtifactError",
    "IntegrityError",
    "ItemKNNModel",
    "ModelError",
    "ModelRegistry",
    "PopularityModel",
    "Ranker",
    "Recommender",
    "RegistryError",
    "TwoStageModel",
    "UserItems",
    "VersionNotFound",
    "model_from_artifacts",
]

_LAZY = {
    "ItemKNNModel": "models.knn",
    "Ranker": "models.ranker",
    "TwoStageModel": "models.two_stage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
