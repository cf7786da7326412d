"""Unreadable inputs (issue #13): each gets a one-line error naming the file and what was expected."""
import pytest


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_text_file_given_as_weights_is_named(tmp_path, suffix):
    from toolkit.models import create_model

    bad = tmp_path / f"weights{suffix}"
    bad.write_text("not weights")
    with pytest.raises(ValueError, match=rf"weights{suffix} is not a readable .* weights file"):
        create_model("tiny_bit", weights=str(bad), num_classes=2)


def test_unreadable_cache_and_garbled_record_get_one_line_errors(tmp_path):
    from toolkit.features.cache import open_cache
    from toolkit.record import RunWriter, load_run

    (tmp_path / "c.h5").write_bytes(b"\x89HDF")  # truncated
    with pytest.raises(ValueError, match=r"c.h5 is not a readable HDF5 feature cache"):
        open_cache(tmp_path / "c.h5")
    w = RunWriter(tmp_path / "run", {"seed": 0}, {})
    w.append_round({"round": 0, "n_labels": 1, "metrics": {}, "acquired": [], "seed_set": []}, finished=True)
    with open(tmp_path / "run" / "rounds.jsonl", "a") as f:
        f.write('{"round": 1, "n_lab\n')
    with pytest.raises(ValueError, match=r"rounds.jsonl, line 2: not a JSON round record"):
        load_run(tmp_path / "run")


def test_a_missing_state_json_is_explained_and_rewritten_by_the_rerun(tiny_cfg, tmp_path):
    """Issue #13 item 10: a run that lost state.json (a kill or a full disk between a round's
    two files) is explained by load_run, and the rerun of its command rewrites it."""
    from toolkit.al.loop import run_active_learning
    from toolkit.record import load_run

    reference = run_active_learning(tiny_cfg, tmp_path / "ref", log=None)
    run_active_learning(tiny_cfg, tmp_path / "run", log=None)
    (tmp_path / "run" / "state.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing state.json. Rerun the command that made it"):
        load_run(tmp_path / "run")
    again = run_active_learning(tiny_cfg, tmp_path / "run", log=None)
    assert again.status == "finished" and again.acquisitions.equals(reference.acquisitions)
