"""Training's weight average: its update, and that it survives a checkpoint, a resume and
an export."""

import json
import os

import pytest
import torch

from face_folders import write_faces
from fsrst import FSRST
from fsrst.export import build_model
from fsrst.train import (Trainer, WeightAverage, encoded_references, training_loss,
                         wrong_reference_share)
from fsrst.variants import config_for


def small_model(seed=0):
    torch.manual_seed(seed)
    return FSRST(config_for("fsrst_x4_small"))


def test_weight_average_moves_by_one_minus_decay():
    model = small_model()
    average = WeightAverage(model, decay=0.75)
    before = {k: v.clone() for k, v in average.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model)
    for name, value in average.model.state_dict().items():
        assert torch.allclose(value, before[name] + 0.25, atol=1e-6), name
    # The average is a copy: training the model does not move it.
    assert not any(p.requires_grad for p in average.model.parameters())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_weight_average_names_the_setting_and_the_range(decay):
    with pytest.raises(ValueError, match=r"train.ema_decay: expected a value in \(0, 1\)"):
        WeightAverage(small_model(), decay)


def config(tmp_path, max_steps, ema_decay):
    return {
        "variant": "fsrst_x4_small", "seed": 1,
        "data": {"train": write_faces(tmp_path / "train", identities=2, photos=4)
                 if not (tmp_path / "train").exists() else str(tmp_path / "train"),
                 "val": str(tmp_path / "train"), "num_references": 3,
                 "reference_dropout": 0.1},
        "augment": {"flip": True, "rot90": True},
        "train": {"batch_size": 2, "learning_rate": 1e-3, "lr_milestones": [], "lr_gamma": 0.5,
                  "max_steps": max_steps, "threads": 1, "ema_decay": ema_decay},
        "log": {"checkpoint_every_s": 300, "validate_every_steps": 2, "validate_samples": 2},
    }


def test_training_keeps_resumes_and_exports_its_weight_average(tmp_path):
    config_path = str(tmp_path / "configs" / "small.yaml")  # checkpoints/ goes beside configs/
    checkpoint = str(tmp_path / "checkpoints" / "fsrst_x4_small.pt")
    Trainer(config(tmp_path, max_steps=2, ema_decay=0.5), config_path).train(max_minutes=10)

    state = torch.load(checkpoint)
    assert state["step"] == 2
    assert state["info"]["ema"] == {"decay": 0.5, "since_step": 0}
    for name, value in state["model"].items():
        if value.is_floating_point() and not torch.equal(value, state["ema"][name]):
            break
    else:
        pytest.fail("after two steps the average equals the last weights")
    with open(tmp_path / "checkpoints" / "fsrst_x4_small.log.jsonl") as f:
        record = json.loads(f.readlines()[-1])
    assert record["step"] == 2
    assert record["val_psnr_ema"] == state["info"]["val_psnr_ema"]

    # A resumed run continues the saved average instead of restarting it.
    resumed = Trainer(config(tmp_path, max_steps=3, ema_decay=0.5), config_path)
    for name, value in resumed.ema.model.state_dict().items():
        assert torch.equal(value, state["ema"][name]), name
    assert resumed.ema_since == 0

    model, info = build_model("fsrst_x4_small", checkpoint, ema=True)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["ema"][name]), name
    assert info["weights"] == "ema"
    assert info["val_psnr"] == state["info"]["val_psnr_ema"]
    _, info = build_model("fsrst_x4_small", checkpoint)
    assert "weights" not in info and info["val_psnr"] == state["info"]["val_psnr"]


def test_a_run_without_the_setting_has_no_average_to_export(tmp_path):
    config_path = str(tmp_path / "configs" / "small.yaml")
    Trainer(config(tmp_path, max_steps=1, ema_decay=None), config_path).train(max_minutes=10)
    checkpoint = str(tmp_path / "checkpoints" / "fsrst_x4_small.pt")
    assert "ema" not in torch.load(checkpoint)
    with pytest.raises(ValueError, match="no weight average"):
        build_model("fsrst_x4_small", checkpoint, ema=True)


def test_an_average_starts_from_a_checkpoint_made_without_one(tmp_path):
    config_path = str(tmp_path / "configs" / "small.yaml")
    Trainer(config(tmp_path, max_steps=1, ema_decay=None), config_path).train(max_minutes=10)
    resumed = Trainer(config(tmp_path, max_steps=2, ema_decay=0.9), config_path)
    assert resumed.step == 1 and resumed.ema_since == 1
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, resumed.ema.model.state_dict()[name]), name


def test_resume_point_is_weights_only_and_adam_resumes_from_beside_it(tmp_path):
    config_path = str(tmp_path / "configs" / "small.yaml")
    Trainer(config(tmp_path, max_steps=2, ema_decay=0.5), config_path).train(max_minutes=10)
    state = torch.load(tmp_path / "checkpoints" / "fsrst_x4_small.pt")
    assert set(state) == {"model", "ema", "step", "samples_seen", "info"}
    beside = torch.load(tmp_path / "checkpoints" / "fsrst_x4_small.optimizer.pt")
    assert beside["step"] == 2
    resumed = Trainer(config(tmp_path, max_steps=3, ema_decay=0.5), config_path)
    moments = resumed.optimizer.state_dict()["state"]
    assert moments and all(int(s["step"]) == 2 for s in moments.values())
    # A fresh clone has the resume point only: Adam restarts, the weights carry on.
    os.remove(tmp_path / "checkpoints" / "fsrst_x4_small.optimizer.pt")
    fresh = Trainer(config(tmp_path, max_steps=3, ema_decay=0.5), config_path)
    assert fresh.step == 2 and not fresh.optimizer.state_dict()["state"]
    for name, value in fresh.model.state_dict().items():
        assert torch.equal(value, state["model"][name]), name


def test_a_named_run_warm_starts_from_another_runs_average(tmp_path):
    config_path = str(tmp_path / "configs" / "small.yaml")
    Trainer(config(tmp_path, max_steps=2, ema_decay=0.5), config_path).train(max_minutes=10)
    parent = torch.load(tmp_path / "checkpoints" / "fsrst_x4_small.pt")
    # A parent saved before the aggregation's threshold existed gets init.threshold.
    del parent["ema"]["aggregation.threshold"]
    torch.save(parent, tmp_path / "checkpoints" / "parent.pt")
    calls = config(tmp_path, max_steps=1, ema_decay=0.5)
    calls["name"] = "fsrst_x4_small_calls"
    calls["init"] = {"checkpoint": "checkpoints/parent.pt", "ema": True, "threshold": 2.5}
    run = Trainer(calls, config_path)
    assert run.step == 0
    for name, value in run.model.state_dict().items():
        expected = torch.tensor(2.5) if name == "aggregation.threshold" else parent["ema"][name]
        assert torch.equal(value, expected), name
    run.train(max_minutes=10)
    state = torch.load(tmp_path / "checkpoints" / "fsrst_x4_small_calls.pt")
    assert state["step"] == 1 and state["info"]["version"] == "calls-1"
    assert state["info"]["init"] == {"checkpoint": "parent.pt", "ema": True, "from_step": 2}
    # Its own resume point wins over init from now on.
    again = Trainer(dict(calls, train=dict(calls["train"], max_steps=2)), config_path)
    assert again.step == 1


def test_wrong_reference_share_is_the_strangers_fraction_of_the_references_weight():
    weights = torch.tensor([[0.2, 0.3, 0.1], [0.5, 0.1, 0.1], [0.3, 0.2, 0.0], [0.4, 0.0, 0.0]])
    wrong = torch.tensor([[False, True, False], [False, False, False], [True, True, False],
                          [True, False, False]])
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False],
                         [True, False, False]])
    # Frame 0: 0.3 of 0.6. Frame 2: every live slot is a stranger's, frame 3 likewise (its
    # own slot is masked), frame 1 has none: they carry no ranking and do not count.
    assert float(wrong_reference_share(weights, wrong, mask)) == pytest.approx(0.5)
    assert float(wrong_reference_share(weights, torch.zeros_like(wrong), mask)) == 0.0


def test_the_penalty_moves_weight_off_a_strangers_reference():
    """A few steps with a huge penalty lower the flagged slot's fraction of the references'
    weight; plain L1 ignores the flag."""
    model = small_model(seed=3)
    torch.manual_seed(4)
    lr, hr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 128, 128)
    refs = torch.rand(2, 3, 1, 128, 128)
    mask = torch.ones(2, 3, dtype=torch.bool)
    wrong = torch.tensor([[False, False, True], [False, False, True]])

    def share():
        with torch.no_grad():
            _, weights = model.forward_with_weights(lr, encoded_references(model, lr, refs), mask)
        return float(wrong_reference_share(weights, wrong, mask))

    loss, logged = training_loss(model, lr, refs, mask, hr, wrong, 0.0)
    assert logged is None and float(loss) > 0
    before = share()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):
        loss, logged = training_loss(model, lr, refs, mask, hr, wrong, 100.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert 0.0 < logged and share() < 0.8 * before


def test_a_run_with_the_penalty_logs_the_strangers_share(tmp_path):
    config_path = str(tmp_path / "configs" / "small.yaml")
    run = config(tmp_path, max_steps=2, ema_decay=0.5)
    run["data"]["one_reference_wrong"] = 1.0
    run["data"]["reference_dropout"] = 0.0
    run["train"]["wrong_reference_weight"] = 0.1
    Trainer(run, config_path).train(max_minutes=10)
    with open(tmp_path / "checkpoints" / "fsrst_x4_small.log.jsonl") as f:
        record = json.loads(f.readlines()[-1])
    assert 0.0 < record["wrong_share"] < 1.0


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_a_negative_penalty_names_the_setting(tmp_path, value):
    run = config(tmp_path, max_steps=1, ema_decay=None)
    run["train"]["wrong_reference_weight"] = value
    with pytest.raises(ValueError, match=r"train.wrong_reference_weight: expected a value >= 0"):
        Trainer(run, str(tmp_path / "configs" / "small.yaml"))
