import numpy as np
import pytest

from toolkit.data import create_dataset, list_datasets
from toolkit.data.toyworld import generate_split, group_counts, ToyWorldParams

SMALL = dict(n_train=200, n_val=40, n_test=40)


def test_same_seed_same_images_different_seed_differs():
    a, ta = generate_split(ToyWorldParams(**SMALL, seed=0), "train")
    b, tb = generate_split(ToyWorldParams(**SMALL, seed=0), "train")
    c, _ = generate_split(ToyWorldParams(**SMALL, seed=1), "train")
    assert np.array_equal(a, b) and ta.equals(tb)
    assert not np.array_equal(a, c)


def test_train_pool_composition_exact():
    _, t = generate_split(ToyWorldParams(**SMALL), "train")
    counts = t.groupby(["y", "place"]).size().to_dict()
    assert counts == {(0, 0): 142, (0, 1): 8, (1, 0): 2, (1, 1): 48}  # round(142.5) = 142
    assert sum(group_counts(1000, 0.25, 0.95).values()) == 1000


def test_eval_splits_balanced_and_ids_distinct():
    _, val = generate_split(ToyWorldParams(**SMALL), "val")
    _, test = generate_split(ToyWorldParams(**SMALL), "test")
    assert set(val.groupby(["y", "place"]).size()) == {10}
    assert not set(val.index) & set(test.index)


def test_labels_follow_shapes_and_places_follow_hue():
    _, t = generate_split(ToyWorldParams(**SMALL), "train")
    assert set(t[t.y == 0]["shape"]) <= {"triangle", "plus", "star"}
    assert (t[t.place == 0]["hue"] < 0.4).all() and (t[t.place == 1]["hue"] > 0.4).all()


def test_disk_cache_round_trip(tmp_path):
    a = create_dataset("toyworld", "train", **SMALL, cache_dir=str(tmp_path))
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    b = create_dataset("toyworld", "train", **SMALL, cache_dir=str(tmp_path))
    assert (a.images == b.images).all() and a.attributes.equals(b.attributes)
    x, y = b.get_batch(np.array([0, 5]))
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1 and y.tolist() == b.labels[[0, 5]].tolist()


def test_bad_input_errors():
    with pytest.raises(ValueError, match="matched_fraction must lie in"):
        create_dataset("toyworld", "train", matched_fraction=1.5, cache_dir=None)
    with pytest.raises(ValueError, match="valid splits"):
        create_dataset("toyworld", "holdout", cache_dir=None)
    with pytest.raises(ValueError, match="valid names: .*toyworld.*waterbirds"):
        create_dataset("imagenet", "train")
    with pytest.raises(TypeError):
        create_dataset("toyworld", "train", n_birds=3)
    assert "toyworld" in list_datasets()
