import numpy as np
import pytest

from toolkit.al import acquisition as acq

PROBS = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])


def test_least_confidence_hand_computed():
    np.testing.assert_allclose(acq.least_confidence(PROBS), [0.1, 0.4, 0.5])


def test_entropy_hand_computed():
    expected = [-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)), -(0.6 * np.log(0.6) + 0.4 * np.log(0.4)), np.log(2)]
    np.testing.assert_allclose(acq.entropy(PROBS), expected)
    # 0 log 0 = 0: a certain prediction has zero entropy, not nan
    np.testing.assert_allclose(acq.entropy(np.array([[1.0, 0.0, 0.0]])), [0.0])


def test_margin_hand_computed_three_classes():
    p = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(acq.margin(p), [-0.2, 0.0, -0.7])


def test_max_logit():
    np.testing.assert_allclose(acq.max_logit(np.array([[2.0, -1.0], [0.1, 0.3]])), [-2.0, -0.3])


def test_three_class_rank_orders_can_differ():
    # LC prefers row 0 (max 0.40), margin prefers row 1 (top2 tie) -- known disagreement
    p = np.array([[0.40, 0.30, 0.30], [0.45, 0.45, 0.10]])
    assert acq.select(acq.least_confidence(p), 1)[0] == 0
    assert acq.select(acq.margin(p), 1)[0] == 1


def test_binary_uncertainty_functions_rank_identically():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 1, 200)
    p = np.stack([p1, 1 - p1], 1)
    orders = [np.argsort(-f(p), kind="stable") for f in (acq.least_confidence, acq.entropy, acq.margin)]
    assert (orders[0] == orders[1]).all() and (orders[0] == orders[2]).all()


def test_random_scores_seeded():
    a = acq.random(50, np.random.default_rng(1))
    b = acq.random(50, np.random.default_rng(1))
    c = acq.random(50, np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_score_logits_matches_probs():
    logits = np.array([[2.0, 0.0], [0.0, 0.1]])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(acq.score_logits("least_confidence", logits), acq.least_confidence(p))
    with pytest.raises(ValueError, match="Generator"):
        acq.score_logits("random", logits)


def test_select_ties_go_to_lower_position():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert acq.select(scores, 3).tolist() == [1, 3, 0]
    with pytest.raises(ValueError, match="k=6"):
        acq.select(scores, 6)


@pytest.mark.parametrize("n_classes", [1, 2, 3, 7, 8, 10])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probs_and_row_maxima_are_the_whole_row_formulas_bit_for_bit(n_classes, dtype):
    """The column-by-column softmax and row maximum (few classes) give the numbers of the
    whole-row formulas, so scores do not change with the path taken."""
    rng = np.random.default_rng(n_classes)
    logits = (rng.normal(size=(3000, n_classes)) * rng.choice([0.01, 1, 30, 800], size=(3000, 1))).astype(dtype)
    logits[5] = np.nan
    z = logits - logits.max(axis=1, keepdims=True)
    ref = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    got = acq._probs(logits)
    assert got.dtype == ref.dtype and np.array_equal(got, ref, equal_nan=True)
    assert np.array_equal(acq._row_max(logits), logits.max(axis=1), equal_nan=True)


@pytest.mark.parametrize("k", [0, 1, 5, 40, 199, 200])
def test_select_equals_a_whole_sort_with_ties_nans_and_signed_zeros(k):
    """The top k from a partial sort equal the whole lexsort's: ties to the lower position, NaN last."""
    rng = np.random.default_rng(k)
    for trial in range(20):
        scores = np.round(rng.normal(size=200), 1)  # many ties
        scores[rng.choice(200, 10 * (trial % 3), replace=False)] = np.nan
        scores[rng.choice(200, 5, replace=False)] = -0.0
        scores[rng.choice(200, 5, replace=False)] = 0.0
        whole = np.lexsort((np.arange(200), -scores))[:k]
        assert acq.select(scores, k).tolist() == whole.tolist()
    assert acq.select(np.full(10, np.nan), 3).tolist() == [0, 1, 2]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_streaming_topk_equals_select(chunk):
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(0, 1, 500), 2)  # many ties
    keys = np.arange(500) + 10_000
    top = acq.StreamingTopK(25)
    for i in range(0, 500, chunk):
        top.update(scores[i:i + chunk], keys[i:i + chunk])
    got_keys, got_scores = top.result()
    ref = acq.select(scores, 25)
    assert got_keys.tolist() == keys[ref].tolist()
    np.testing.assert_allclose(got_scores, scores[ref])


def test_streaming_topk_too_few():
    top = acq.StreamingTopK(5)
    top.update(np.ones(3), np.arange(3))
    with pytest.raises(ValueError, match="only 3"):
        top.result()


@pytest.mark.parametrize("name", acq.list_strategies())
def test_registry_names(name):
    kind, fn = acq.get_acquisition(name)
    assert kind in {"probs", "logits", "none", "samples", "embeddings", "gradients"} and callable(fn)


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="least_confidence"):
        acq.get_acquisition("batchbald")
