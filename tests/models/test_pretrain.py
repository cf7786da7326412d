"""Pretraining of the toy backbone: deterministic, and its augmentation keeps targets aligned."""
import torch

from toolkit.models.pretrain import PretrainRecipe, dihedral, make_pretraining_data, pretrain_toy


def test_dihedral_moves_image_and_mask_together():
    x = torch.zeros(64, 3, 8, 8)
    mask = torch.zeros(64, 8, 8)
    x[:, :, 1, 2] = 1.0  # one marked pixel, at the same place in the image and in its mask
    mask[:, 1, 2] = 1.0
    gx, gm = dihedral(x, mask, torch.Generator().manual_seed(0))
    assert torch.equal(gx[:, 0] > 0, gm > 0) and torch.equal(gx[:, 1], gx[:, 0])
    positions = {tuple(torch.nonzero(m)[0].tolist()) for m in gm}
    assert len(positions) == 8  # all eight quarter-turn x mirror images of (1, 2) occur in 64 draws
    assert torch.equal(x[:, 0, 1, 2], torch.ones(64))  # the input is not modified in place


def test_pretraining_data_covers_all_shapes_and_is_seeded():
    r = PretrainRecipe(n_images=200)
    a, ta = make_pretraining_data(r, 200, stream=0)
    b, _ = make_pretraining_data(r, 200, stream=0)
    c, _ = make_pretraining_data(r, 200, stream=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(ta["shape"].unique()) == 20 and a.shape == (200, 3, 32, 32)


def test_pretraining_is_deterministic(tmp_path):
    recipe = PretrainRecipe(n_images=300, steps=6, batch_size=16, warmup_steps=2)
    m1 = pretrain_toy(tmp_path / "a.pt", recipe, log_every=3)
    m2 = pretrain_toy(tmp_path / "b.pt", recipe, log_every=0)
    a, b = torch.load(tmp_path / "a.pt")["backbone"], torch.load(tmp_path / "b.pt")["backbone"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert m1["heldout_shape_acc"] == m2["heldout_shape_acc"]
    assert set(m1) >= {"heldout_shape_acc", "heldout_shape_acc_toyworld_sizes", "seconds"}


def test_a_toy_checkpoint_of_another_architecture_is_refused(tmp_path):
    """v1 checkpoints have the same parameter shapes with a stride-1 last stage."""
    import pytest

    from toolkit.models import create_model
    from toolkit.models.toy import ToyResNet

    v1 = ToyResNet(strides=(1, 2, 2, 1))
    torch.save({"backbone": v1.state_dict(), "recipe": {}, "metrics": {}}, tmp_path / "v1.pt")
    with pytest.raises(ValueError, match="another architecture .*strides.*altk pretrain toy"):
        create_model("toy_resnet", weights=str(tmp_path / "v1.pt"), num_classes=2)
    torch.save({"backbone": ToyResNet().state_dict(), "architecture": ToyResNet().architecture(), "recipe": {}},
               tmp_path / "v2.pt")
    assert create_model("toy_resnet", weights=str(tmp_path / "v2.pt"), num_classes=2) is not None


def test_a_second_process_asking_for_a_backbone_waits_for_the_first_instead_of_pretraining_again(tmp_path):
    import threading

    from toolkit._util.locks import exclusive
    from toolkit.models.pretrain import _pretrain_once

    path, calls = tmp_path / "toy_resnet-v2@shapes10.pt", []
    with exclusive(path, "pretraining a toy backbone"):  # the first process, mid-pretraining
        second = threading.Thread(target=_pretrain_once, args=(path, "pretraining", lambda: calls.append(1)))
        second.start()
        second.join(timeout=0.5)
        assert second.is_alive()  # it waits on the lock
        path.write_bytes(b"weights")  # the first one finishes
    second.join(timeout=10)
    assert not second.is_alive() and calls == []  # it found the backbone and did not pretrain it again
    _pretrain_once(tmp_path / "other.pt", "pretraining", lambda: calls.append(1))
    assert calls == [1]
