"""Model selection in the trainer: every family is a publishable Recommender, the best on
validation is published, and a version that loses to a same-run baseline on the holdout is
refused (exit 3) unless forced. Small synthetic data (seconds), real local object storage."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from core.config import Settings
from core.storage import open_store
from models import ModelRegistry, UserItems
from models.ease import EaseModel
from models.kinds import model_class
from training import pipeline
from training.pipeline import run_training
from training.select import BASELINES, FAMILIES, Selection, pick
from training.synthetic import power_law_events, structured_events, write_snapshots

N_EVENTS = 30_000  # 300 users, ~700 items: the whole module trains in seconds
SMALL = {
    "catalog": "none",
    "threads": 1,
    "als_iterations": 8,
    "ranker_rounds": 50,
    "ranker_max_users": 300,
    "eval_max_users": 300,
}


def _settings(root: Path, events) -> Settings:
    write_snapshots(open_store(f"file://{root}"), events)
    return Settings().with_sections(storage={"url": f"file://{root}"}, train=SMALL)


@pytest.fixture(scope="module")
def structured(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(tmp_path_factory.mktemp("structured"), structured_events(N_EVENTS, seed=3))


@pytest.fixture(scope="module")
def uniform(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(tmp_path_factory.mktemp("uniform"), power_law_events(N_EVENTS, seed=3))


def _m(**ndcg: float) -> dict[str, dict[str, float]]:
    return {k.replace("_", "-"): {"ndcg@10": v} for k, v in ndcg.items()}


def test_pick_refusal_and_lifts_by_hand() -> None:
    scores = {"popularity": 0.1, "item_knn": 0.2, "als": 0.15, "ease": 0.3, "als+lgbm": 0.3}
    validation = {k.replace("_", "-"): {"ndcg@10": v} for k, v in scores.items()}
    assert pick(validation) == "ease"  # a tie goes to the simpler family
    sel = Selection("ease", validation, _m(popularity=0.1, item_knn=0.25, als=0.2, ease=0.2))
    assert sel.beaten_by() == ["item-knn"]
    reason = sel.refusal()
    assert reason and "ease" in reason and "item-knn 0.2500" in reason and "\n" not in reason
    assert sel.lifts()["popularity"] == pytest.approx(1.0)
    won = Selection("als", validation, _m(popularity=0.1, item_knn=0.1, als=0.2, ease=0.3))
    assert won.refusal() is None and won.beaten_by() == []  # ease is no baseline
    assert "popularity +100.0%" in won.summary() and won.card()["family"] == "als"


def test_every_family_is_a_publishable_recommender() -> None:
    for family in FAMILIES:
        assert model_class(family).kind == family


def test_structured_data_publishes_a_model_that_beats_popularity_and_knn(
    structured: Settings,
) -> None:
    report = run_training(structured, name="structured")
    m, sel = report.metrics, report.selection
    assert sel is not None and set(m) == set(FAMILIES) == set(sel.validation)
    winner = sel.winner
    assert winner == pick(sel.validation)  # chosen on validation, not on the holdout
    assert m[winner]["ndcg@10"] > m["popularity"]["ndcg@10"]
    assert m[winner]["ndcg@10"] > m["item-knn"]["ndcg@10"]
    card = report.manifest
    assert card is not None and card.kind == winner
    assert card.params["selection"]["family"] == winner
    assert set(card.params["selection"]["holdout_lift"]) == set(FAMILIES) - {winner}
    assert card.notes.startswith(f"{winner} won validation") and "item-knn +" in card.notes
    # What was published loads and answers as a Recommender, like serving would call it.
    model = ModelRegistry.from_settings(structured.storage, "structured").load(card.version)
    user = "u1"
    recs = model.recommend(user, 10, exclude=set(model.seen_items(user)))
    assert len(recs) == 10


def test_uniform_data_never_publishes_a_version_a_baseline_beats(uniform: Settings) -> None:
    report = run_training(uniform, name="uniform")
    sel = report.selection
    assert sel is not None
    if sel.beaten_by():
        assert report.manifest is None and report.decision.reason.startswith("refused:")
    else:
        assert report.manifest is not None and report.manifest.kind == sel.winner
        mine = report.metrics[sel.winner]["ndcg@10"]
        assert all(mine >= report.metrics[b]["ndcg@10"] for b in BASELINES)


def _args(**kw) -> argparse.Namespace:
    base = {"since": None, "until": None, "force": False, "promote": False, "name": None,
            "catalog": None, "tune": False}  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_a_winner_beaten_by_a_baseline_is_refused_unless_forced(
    structured: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from streamrec.cli.train import run

    # Validation picks popularity (as a bad validation split could); item-knn beats it.
    monkeypatch.setattr(pipeline, "pick", lambda _validation: "popularity")
    assert run(_args(name="refused"), structured) == 3
    out = capsys.readouterr().out
    assert "refused: popularity (best on validation) loses to a same-run baseline" in out
    assert ModelRegistry.from_settings(structured.storage, "refused").versions() == []

    forced = run_training(structured, name="refused", force=True)
    assert forced.manifest is not None and forced.manifest.kind == "popularity"
    assert forced.decision.forced and "forced (--force) past: popularity" in forced.decision.reason


def test_ease_scores_round_trip_and_exclude() -> None:
    ev = structured_events(5_000, n_users=60, n_items=80, seed=1)
    users, u = np.unique(ev.users, return_inverse=True)
    items, i = np.unique(ev.items, return_inverse=True)
    m = csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(users), len(items)))
    data = UserItems(m, users.astype(object), items.astype(object))
    model = EaseModel.fit(data, l2=10.0, max_items=50, neighbours=20)
    fitted = np.unique(model.similarity.tocoo().row)
    assert len(fitted) <= 50  # only the most interacted items are modelled
    user = str(data.user_ids[0])
    seen = set(model.seen_items(user))
    recs = model.recommend(user, 5, exclude=seen)
    assert recs and not seen & {i for i, _ in recs}
    again = EaseModel.from_artifacts(
        {k: v for k, (v, _f) in model.to_artifacts().items()}, model.params()
    )
    assert again.recommend(user, 5, exclude=seen) == recs
    # An unseen user with fresh history is personalised, the history itself never returned.
    hist = [str(data.item_ids[j]) for j in fitted[:3]]
    fresh = model.recommend("newcomer", 5, history=hist)
    assert fresh and not set(hist) & {i for i, _ in fresh}
