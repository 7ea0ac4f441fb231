"""The synthetic log's truth and the best ranking it allows (sml.ceiling)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sml.candidates import Candidates
from sml.ceiling import KNOWLEDGE, ceiling_scores, generator_indices, topic_probabilities
from sml.data import split_equal_count
from sml.metrics import ranks, recall_ndcg
from sml.synthetic import SyntheticConfig, synthetic_drift, synthetic_drift_with_truth

# one long-term topic per user (no mixture), many items per topic: every draw follows
# the user's long-term topic or their short-term one of its period
# (a catalogue large against each user's rows, as in the named profiles)
ONE_TOPIC = SyntheticConfig(n_periods=5, interactions_per_period=1500, n_users_initial=120,
                            n_items_initial=3000, n_topics=6, seed=4)


def test_the_truth_comes_with_the_very_same_log() -> None:
    config = dataclasses.replace(ONE_TOPIC, topic_concentration=0.3, churn=0.1, freshness=2.0)
    plain = synthetic_drift(config)
    log, truth = synthetic_drift_with_truth(config)
    for field in ("users", "items", "timestamps"):
        np.testing.assert_array_equal(getattr(log, field), getattr(plain, field))
    assert log.user_ids == plain.user_ids and log.item_ids == plain.item_ids
    n_users, n_items = len(truth.long_term), len(truth.item_topic)
    assert truth.short_term.shape == (config.n_periods, n_users)
    assert truth.weight.shape == (config.n_periods, n_items)
    np.testing.assert_allclose(truth.long_term.sum(1), 1.0)


def test_every_row_follows_what_the_truth_says_generated_it() -> None:
    log, truth = synthetic_drift_with_truth(ONE_TOPIC)
    users = generator_indices(log.user_ids)[np.asarray(log.users)]
    items = generator_indices(log.item_ids)[np.asarray(log.items)]
    period = truth.period_of(log.timestamps)
    assert period.min() == 0 and period.max() == ONE_TOPIC.n_periods - 1
    # the item had arrived, and its topic is the user's long-term or short-term one
    assert (truth.weight[period, items] > 0).all()
    topic = truth.item_topic[items]
    long_term = truth.long_term.argmax(1)[users]
    assert ((topic == long_term) | (topic == truth.short_term[period, users])).all()
    # and the short-term topic does move between periods (drift 0.3)
    assert (truth.short_term[1:] != truth.short_term[:-1]).any()


def test_what_the_ranking_knows_orders_the_ceilings() -> None:
    # long-term mixtures over a few topics each, as in the named profiles
    log, truth = synthetic_drift_with_truth(dataclasses.replace(ONE_TOPIC, topic_concentration=0.3))
    candidates = Candidates.sample(log, 99)
    last = split_equal_count(log, n_periods=ONE_TOPIC.n_periods)[-1]
    recall = {}
    for knows in KNOWLEDGE:
        scores = ceiling_scores(log, truth, candidates, last.start, last.stop, knows)
        assert scores.shape == (len(last), 100)
        recall[knows] = recall_ndcg(ranks(scores), 20)[0].mean()
    assert recall["period"] > recall["previous"] > recall["long_term"] > recall["popularity"]
    assert recall["popularity"] > 0.2  # above a constant scorer's 20 of 100


def test_without_drift_last_periods_topic_is_this_periods() -> None:
    _, truth = synthetic_drift_with_truth(dataclasses.replace(ONE_TOPIC, drift=0.0))
    users = np.arange(len(truth.long_term))
    np.testing.assert_allclose(topic_probabilities(truth, users, 3, "previous"),
                               topic_probabilities(truth, users, 3, "period"))
    with pytest.raises(ValueError, match="knows"):
        topic_probabilities(truth, users, 3, "everything")  # type: ignore[arg-type]
