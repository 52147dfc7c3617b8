"""LightGBM LambdaRank over candidate features, stored as LightGBM's text model."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.errors import ArtifactError

log = logging.getLogger(__name__)

ARTIFACT = "ranker.txt"

# Small trees and a brisk learning rate: chosen for training cost on a 2-core host (the
# number of rounds comes from early stopping on users held out of the ranker's data).
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10],
    "learning_rate": 0.15,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambdarank_truncation_level": 20,
    "verbosity": -1,
    "max_bin": 63,
}


class Ranker:
    """A fitted LightGBM booster plus the feature names it expects, in order."""

    def __init__(self, booster: Any, feature_names: Sequence[str]) -> None:
        self.booster = booster
        self.feature_names = tuple(feature_names)
        self._compiled: Any = None  # lleaves.Model once compiled; False if it cannot be
        self._compile_lock = threading.Lock()

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        feature_names: Sequence[str],
        *,
        valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        params: dict[str, Any] | None = None,
        rounds: int = 200,
        early_stopping: int = 20,
        seed: int = 42,
        num_threads: int = 0,
    ) -> Ranker:
        """``groups`` are the per-user row counts (rows are grouped by user, in order)."""
        import lightgbm as lgb

        p = {**DEFAULT_PARAMS, **(params or {}), "seed": seed, "num_threads": num_threads}
        names = list(feature_names)
        train = lgb.Dataset(x, y, group=groups, feature_name=names, free_raw_data=True)
        sets, callbacks = [train], list[Callable[..., Any]]()
        if valid is not None:
            sets.append(lgb.Dataset(valid[0], valid[1], group=valid[2], reference=train))
            callbacks.append(lgb.early_stopping(early_stopping, verbose=False))
        booster = lgb.train(p, train, num_boost_round=rounds, valid_sets=sets, callbacks=callbacks)
        return cls(booster, names)

    @property
    def best_iteration(self) -> int:
        return int(self.booster.best_iteration or self.booster.current_iteration())

    def predict(self, x: np.ndarray) -> np.ndarray:
        """LightGBM's own prediction (the reference)."""
        return np.asarray(self.booster.predict(x, num_iteration=self.best_iteration, num_threads=1))

    def predict_fast(self, x: np.ndarray) -> np.ndarray:
        """The same scores from the trees compiled to native code (lleaves): LightGBM spends
        ~1 us per row walking its trees, which over a request's 200 candidates was the
        largest single cost of a model call; the compiled function takes a tenth of that.
        Compiled on first use (about a second; serving's warm-up pays it), LightGBM's own
        prediction if compiling is not possible. Equal to :meth:`predict` up to float64
        rounding of the sum (checked by tests/test_serving_fast_path.py)."""
        compiled = self._compiled if self._compiled is not None else self.compile()
        if compiled is False:
            return self.predict(x)
        return np.asarray(compiled.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=1))

    def compile(self) -> Any:
        """The lleaves model (False when unavailable). Once per ranker, on any thread."""
        with self._compile_lock:
            if self._compiled is None:
                self._compiled = self._compile()
        return self._compiled

    def _compile(self) -> Any:
        try:
            import lleaves

            # lleaves reads the model from a file; the compiled code lives in memory.
            fd, path = tempfile.mkstemp(suffix=".txt", prefix="ranker-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(self.to_text())
                model = lleaves.Model(model_file=path)
                model.compile()
            finally:
                os.unlink(path)
        except Exception as err:  # a platform without LLVM still serves, more slowly
            log.warning("ranker not compiled, LightGBM predicts instead: %s", err)
            return False
        return model

    def to_text(self) -> bytes:
        return str(self.booster.model_to_string(num_iteration=self.best_iteration)).encode()

    @classmethod
    def from_text(cls, data: bytes, feature_names: Sequence[str], *, kind: str) -> Ranker:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=data.decode())
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as err:
            raise ArtifactError(
                f"{ARTIFACT} is not a LightGBM text model: {err}", kind=kind, artifact=ARTIFACT
            ) from err
        if tuple(booster.feature_name()) != tuple(feature_names):
            raise ArtifactError(
                f"{ARTIFACT} expects features {booster.feature_name()}, this code computes "
                f"{list(feature_names)}",
                kind=kind,
                artifact=ARTIFACT,
            )
        return cls(booster, feature_names)

    def importance(self) -> dict[str, float]:
        gains = self.booster.feature_importance(importance_type="gain")
        return {n: float(g) for n, g in zip(self.feature_names, gains, strict=True)}
