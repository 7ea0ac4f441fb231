"""The protocol's reference figures (docs/protocol.md), reproduced on the real MovieLens-100K.

Runs where the data set is cached (CI fetches it before the suite); skipped otherwise.
"""

import pytest
import torch

from sml import readers
from sml.metrics import aggregate
from sml.model import MFConfig, MFWeights
from sml.replay import run_method
from sml.replay_data import ReplayData


@pytest.fixture(scope="module")
def ml100k() -> ReplayData:
    cache = readers._default_cache_dir()
    if not (cache / "ml-100k.inter").is_file():
        pytest.skip(f"ML-100K is not cached in {cache}")
    return ReplayData.prepare(readers.load_movielens_100k())


def test_popularity_matches_the_protocol_figures(ml100k: ReplayData) -> None:
    # popularity counts the pretraining periods itself; the shared base is not used
    base = MFWeights.init(MFConfig(dim=4), 1, 1, torch.Generator())
    run = run_method("popularity", ml100k, base, hyper={})
    test = run.summary(ml100k.roles.test)
    # docs/protocol.md: sampled Recall@20 0.705, NDCG@20 0.335; full Recall@20 0.091, NDCG@20 0.034
    assert test["recall@20"] == pytest.approx(0.705, abs=0.002)
    assert test["ndcg@20"] == pytest.approx(0.335, abs=0.002)
    assert test["full_recall@20"] == pytest.approx(0.091, abs=0.001)
    assert test["full_ndcg@20"] == pytest.approx(0.034, abs=0.001)
    first_seen = aggregate([run.evaluations[p] for p in ml100k.roles.test], "first_seen")
    assert 0.57 <= first_seen["share"] <= 0.92
