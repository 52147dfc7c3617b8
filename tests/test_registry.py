"""The model registry on real object storage (a local directory store; S3 shares the code
path through the same ObjectStore contract)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from core.storage import open_store
from models import (
    AliasError,
    IntegrityError,
    ModelRegistry,
    RegistryError,
    VersionNotFound,
)
from tests.support.registry import popularity_model, publish_popularity

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(open_store(f"file://{tmp_path / 'storage'}"), "reco")


def test_publish_writes_a_complete_model_card(registry: ModelRegistry) -> None:
    assert registry.versions() == []
    assert publish_popularity(registry) == 1
    assert publish_popularity(registry, 1) == 2
    assert registry.versions() == [1, 2]
    card = registry.manifest(2)
    assert card.kind == "popularity" and card.name == "reco"
    assert card.params["seed"] == 1 and "half_life_days" in card.params["model"]
    assert set(card.artifacts) == {"popularity.json"}
    assert card.artifacts["popularity.json"].format == "json"
    assert card.code_version
    loaded = registry.load(2)
    assert loaded.recommend("u", 5) == popularity_model(1).recommend("u", 5)
    history = registry.aliases().history
    assert [(h.action, h.version) for h in history] == [("publish", 1), ("publish", 2)]


def test_tampered_artifact_is_refused(registry: ModelRegistry) -> None:
    v = publish_popularity(registry)
    key = f"models/reco/{v}/popularity.json"
    doc = orjson.loads(registry.store.get(key))
    doc["scores"][0] += 1000  # boost one item
    registry.store.put(key, orjson.dumps(doc))
    with pytest.raises(IntegrityError, match="sha256 mismatch") as err:
        registry.load(v)
    assert err.value.artifact == "popularity.json" and err.value.version == v


def test_incomplete_versions_are_refused(registry: ModelRegistry) -> None:
    v = publish_popularity(registry)
    registry.store.delete(f"models/reco/{v}/popularity.json")
    with pytest.raises(IntegrityError, match="artifact missing"):
        registry.load(v)
    # A claimed version whose publisher died before writing the manifest.
    registry.store.put("models/reco/7/_claim.json", b"{}")
    with pytest.raises(IntegrityError, match="incomplete"):
        registry.load(7)
    assert 7 not in registry.versions()
    assert publish_popularity(registry) == 8  # never reuses a claimed number
    with pytest.raises(VersionNotFound):
        registry.load(99)


def test_promote_rollback_and_canary(registry: ModelRegistry) -> None:
    for seed in range(3):
        publish_popularity(registry, seed)
    with pytest.raises(AliasError, match="nothing to roll back"):
        registry.rollback(reason="no production yet")
    registry.promote(1, reason="first")
    registry.promote(2, reason="better")
    registry.set_canary(3, 5, rollout_id="r1", reason="try")
    doc = registry.set_canary(3, 25, rollout_id="r1", reason="ramp")
    assert doc.canary and doc.canary.weight == 25
    doc = registry.promote(3, reason="canary good")
    assert doc.production and doc.production.version == 3 and doc.canary is None
    doc = registry.rollback(reason="regression", actor="auto", evidence={"ndcg": 0.1})
    assert doc.production and doc.production.version == 2
    assert doc.history[-1].previous_version == 3 and doc.history[-1].evidence == {"ndcg": 0.1}
    doc = registry.rollback(reason="again")
    assert doc.production and doc.production.version == 1
    with pytest.raises(AliasError):
        registry.rollback(reason="too far")
    with pytest.raises(VersionNotFound):
        registry.promote(42, reason="typo")
    with pytest.raises(AliasError, match="0-100"):
        registry.set_canary(3, 101, rollout_id="r2")
    assert registry.clear_canary().revision == doc.revision  # nothing to clear: no write
    actions = [h.action for h in registry.aliases().history]
    assert actions[-7:] == [
        "promote",
        "promote",
        "canary",
        "canary_weight",
        "promote",
        "rollback",
        "rollback",
    ]
    assert registry.aliases().revision == len(registry.aliases().history)


def test_invalid_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        ModelRegistry(open_store(str(tmp_path)), "Bad/Name")


_RACER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from core.storage import open_store
    from models import ModelRegistry, PopularityModel
    from schemas.manifest import TrainingData

    reg = ModelRegistry(open_store(sys.argv[1]), "reco")
    seed = int(sys.argv[2])
    items = np.array([f"i{j}" for j in range(50)], dtype=object)
    for n in range(int(sys.argv[3])):
        model = PopularityModel.fit(items, np.arange(50) % (seed + 2), np.zeros(50))
        m = reg.publish(model, training_data=TrainingData(), params={"racer": seed, "n": n},
                        metrics={})
        reg.set_canary(m.version, 10, rollout_id=f"r{seed}-{n}", reason="race")
        print(m.version, flush=True)
    """
)


def test_racing_publishers_get_distinct_versions(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'storage'}"
    racers, per_racer = 4, 5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, url, str(seed), str(per_racer)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(racers)
    ]
    got = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        got.extend(int(line) for line in out.split())
    total = racers * per_racer
    assert sorted(got) == list(range(1, total + 1))  # distinct, no gaps
    reg = ModelRegistry(open_store(url), "reco")
    assert reg.versions() == list(range(1, total + 1))
    for v in reg.versions():
        reg.load(v)  # every version intact: nobody wrote into another's directory
    doc = reg.aliases()
    # Every alias change landed exactly once: one publish and one canary entry per version.
    assert doc.revision == len(doc.history) == 2 * total
    assert sorted(h.version for h in doc.history if h.action == "publish") == sorted(got)
    assert sorted(h.version for h in doc.history if h.action == "canary") == sorted(got)
