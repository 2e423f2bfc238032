"""Trains an FSRST variant, resumably.

    /usr/bin/python3 -m fsrst.train --config configs/fsrst_x4_calls.yaml [--max_minutes 170]

Run from model/. A run is named by the config's `name` (default: the variant). Its
resume point (weights, step, samples seen, and the weight average when train.ema_decay
is set; no optimizer state, so it is small enough to commit) goes to
checkpoints/<name>.pt every log.checkpoint_every_s seconds and at exit; the optimizer's
state goes beside it to checkpoints/<name>.optimizer.pt (not committed). A new run
resumes from both; from the resume point alone (a fresh clone) Adam restarts its
moments, which costs a few hundred steps of warm-up and nothing else. A run with
`init.checkpoint` and no resume point of its own starts from that checkpoint's weights
(its average with init.ema) at step 0. Loss and validation PSNR (of the average too)
are appended to checkpoints/<name>.log.jsonl.
"""

import argparse
import copy
import json
import os
import signal
import time

import torch
import torch.nn.functional as F
import yaml

from fsrst.evaluate import video_protocol_samples, with_condition
from fsrst.face_data import evaluation_samples
from fsrst.frame_conditions_study import condition_samples, load_call_clips
from fsrst.feature_widening import widen_state
from fsrst.reference_colour import colour_state
from fsrst.fsrst_net import FSRST, load_weights
from fsrst.image_metrics import psnr
from fsrst.training_mix import TrainingMix
from fsrst.variants import config_for

# parameters an aggregation may have that its parent did not: learned keys and values
# (fsrst/distance_aggregation.py), the local search's shift penalties
# (fsrst/local_search_aggregation.py). They start as the model initialises them.
NEW_AGGREGATION_PREFIXES = ("aggregation.lr_key.", "aggregation.reference_key.",
                            "aggregation.reference_value.", "aggregation.shift_penalty")


def load_config(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def encoded_references(model: FSRST, lr: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """refs [B,K,1,R,R] -> features [B,K,C,S,S]."""
    b, k = refs.shape[:2]
    if k == 0:
        return lr.new_zeros((b, 0, *model.feature_shape()))
    return model.encode_references(refs.flatten(0, 1)).unflatten(0, (b, k))


def run_model(model: FSRST, lr: torch.Tensor, refs: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """lr [B,3,L,L], refs [B,K,1,R,R], mask [B,K] -> [B,3,H,H]."""
    return model(lr, encoded_references(model, lr, refs), mask)


def wrong_reference_share(weights: torch.Tensor, wrong: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
    """weights [B,K] (forward_with_weights), wrong and mask [B,K] bool -> the fraction of the
    references' weight that went to another person's, averaged over the frames that hold both
    a stranger's and an own reference (0 if none does). A fraction, not the weight itself: the
    model cannot lower it by ignoring every reference, only by telling the stranger apart.
    """
    wrong = wrong & mask
    to_stranger = torch.where(wrong, weights, torch.zeros_like(weights)).sum(dim=1)
    fraction = to_stranger / weights.sum(dim=1).clamp(min=1e-6)
    mixed = wrong.any(dim=1) & (mask & ~wrong).any(dim=1)
    fraction = torch.where(mixed, fraction, torch.zeros_like(fraction))
    return fraction.sum() / mixed.sum().clamp(min=1)


def training_loss(model: FSRST, lr: torch.Tensor, refs: torch.Tensor, mask: torch.Tensor,
                  hr: torch.Tensor, wrong: torch.Tensor, wrong_weight: float):
    """L1 to the HR frame, plus wrong_weight times the fraction of the references' weight that
    went to another person's (wrong_reference_share; train.wrong_reference_weight, 0 = plain
    L1). -> (loss, that fraction as a float, or None when wrong_weight is 0)."""
    if wrong_weight <= 0.0:
        return F.l1_loss(run_model(model, lr, refs, mask), hr), None
    image, weights = model.forward_with_weights(lr, encoded_references(model, lr, refs), mask)
    share = wrong_reference_share(weights, wrong, mask)
    return F.l1_loss(image, hr) + wrong_weight * share, float(share)


@torch.no_grad()
def validate(model: FSRST, samples, batch_size: int = 16) -> float:
    """Mean PSNR over samples of (lr, refs, hr), or (lr, refs, mask, hr)."""
    model.eval()
    scores = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        lr = torch.stack([s[0] for s in chunk])
        refs = torch.stack([s[1] for s in chunk])
        hr = torch.stack([s[-1] for s in chunk])
        mask = torch.stack([s[2] for s in chunk]) if len(chunk[0]) == 4 else torch.ones(
            refs.shape[:2], dtype=torch.bool)
        scores.append(psnr(run_model(model, lr, refs, mask), hr))
    model.train()
    return float(torch.cat(scores).mean())


def video_validation_sets(root: str, extra_conditions=(), reference_channels: int = 1) -> dict:
    """The training curve's call rows on a clip folder (fsrst.evaluate's video protocol):
    JPEG q75 frames with the person's references, with none, with another person's; clean
    frames with the person's references; and, per name in `extra_conditions`
    (fsrst.frame_conditions_study's, e.g. h264_crf28 or blur2), its frames with the person's
    references. Name -> samples of (lr, refs, mask, hr)."""
    if extra_conditions and reference_channels != 1:
        raise ValueError("log.validate_video_conditions: the frame conditions study has luma "
                         "references only; expected no conditions with "
                         f"model.reference_channels {reference_channels}")
    clean, others = video_protocol_samples(root, reference_channels=reference_channels)
    q75 = with_condition(clean, "jpeg75")
    own = torch.ones(clean[0][1].shape[0], dtype=torch.bool)
    sets = {
        "video_clean": [(lr, refs, own, hr) for lr, refs, hr in clean],
        "video_q75": [(lr, refs, own, hr) for lr, refs, hr in q75],
        "video_q75_none": [(lr, refs, ~own, hr) for lr, refs, hr in q75],
        "video_q75_other": [(lr, other, own, hr) for (lr, _, hr), other in zip(q75, others)],
    }
    if extra_conditions:
        call_clips = load_call_clips(root)
        for condition in extra_conditions:
            samples = condition_samples(call_clips, condition)[0]
            sets[f"video_{condition}"] = [(lr, refs, own, hr) for lr, refs, hr in samples]
    return sets


class WeightAverage:
    """An exponential moving average of a model's weights (as BasicSR's ema_decay): after
    each optimizer step, average = decay * average + (1 - decay) * weights. At a low
    learning rate it smooths out the last steps' noise. Owns its copy of the model;
    not thread-safe."""

    def __init__(self, model: FSRST, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay: expected a value in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: FSRST) -> None:
        current = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.is_floating_point():
                average.mul_(self.decay).add_(current[name], alpha=1.0 - self.decay)
            else:
                average.copy_(current[name])


def atomic_save(state: dict, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


class Trainer:
    def __init__(self, config: dict, config_path: str):
        self.config = config
        self.variant = config["variant"]
        base = os.path.dirname(os.path.abspath(config_path))
        model_dir = os.path.dirname(base)
        resolve = lambda p: p if os.path.isabs(p) else os.path.normpath(os.path.join(model_dir, p))
        data = config["data"]
        self.train_root, self.val_root = resolve(data["train"]), resolve(data["val"])
        self.name = config.get("name", self.variant)
        self.checkpoint_path = os.path.join(model_dir, "checkpoints", self.name + ".pt")
        self.optimizer_path = os.path.join(model_dir, "checkpoints", self.name + ".optimizer.pt")
        self.log_path = os.path.join(model_dir, "checkpoints", self.name + ".log.jsonl")
        self.video_train = resolve(data["video_train"]) if data.get("video_train") else None
        self.video_val = resolve(data["video_val"]) if data.get("video_val") else None
        self.init = dict(config.get("init") or {})
        if self.init.get("checkpoint"):
            self.init["checkpoint"] = resolve(self.init["checkpoint"])
        os.makedirs(os.path.dirname(self.checkpoint_path), exist_ok=True)
        train = config["train"]
        torch.manual_seed(config["seed"])
        self.model_overrides = dict(config.get("model") or {})
        self.model = FSRST(config_for(self.variant, self.model_overrides))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train["learning_rate"])
        self.wrong_weight = float(train.get("wrong_reference_weight", 0.0))
        if not self.wrong_weight >= 0.0:
            raise ValueError("train.wrong_reference_weight: expected a value >= 0 (0 = plain L1), "
                             f"got {train['wrong_reference_weight']}")
        self.step = 0
        self.samples_seen = 0
        channels = self.model.reference_channels
        self.dataset = TrainingMix(self.train_root, self.video_train, data,
                                   augment=config["augment"], degrade=config.get("degrade"),
                                   seed=config["seed"], reference_channels=channels)
        self.val_samples = evaluation_samples(self.val_root, data["num_references"],
                                              reference_channels=channels)[
            :config["log"]["validate_samples"]]
        self.video_val_sets = video_validation_sets(
            self.video_val, config["log"].get("validate_video_conditions", ()), channels) \
            if self.video_val else {}
        self.best_val = None
        self.ema_val = None
        self.val_extra = {}
        self.ema = None
        self.ema_since = None  # the step the average started from
        if os.path.exists(self.checkpoint_path):
            self._resume()
        elif self.init.get("checkpoint"):
            self._warm_start()
        if train.get("ema_decay") and self.ema is None:
            # From the current weights: at step 0, or when a run without it resumes.
            self.ema = WeightAverage(self.model, train["ema_decay"])
            self.ema_since = self.step

    def _warm_start(self) -> None:
        """Weights (or their average) of another run's checkpoint, at step 0. Weights saved
        before the aggregation learned its threshold get init.threshold; a model with the
        aggregation's projections or shift penalties, from weights without them, starts them as
        the model initialises them (the identity; shifted candidates penalised). init.widen
        grows the feature channels (feature_widening), init.colour turns luma references into
        RGB ones (reference_colour)."""
        state = torch.load(self.init["checkpoint"], map_location="cpu")
        weights = state["ema"] if self.init.get("ema") else state["model"]
        if self.init.get("widen"):
            weights = widen_state(weights, self.model, torch.Generator().manual_seed(
                self.config["seed"]))
        if self.init.get("colour"):
            weights = colour_state(weights, self.model)
        added = [name for name in self.model.state_dict()
                 if name.startswith(NEW_AGGREGATION_PREFIXES) and name not in weights]
        if added:
            weights = dict(weights)
            weights.update({name: self.model.state_dict()[name] for name in added})
            print(f"{self.name}: the aggregation's new parameters start as the model "
                  f"initialises them ({', '.join(added)})", flush=True)
        load_weights(self.model, weights)
        if "aggregation.threshold" not in weights and "threshold" in self.init:
            with torch.no_grad():
                self.model.aggregation.threshold.fill_(float(self.init["threshold"]))
        self.init["from_step"] = state["step"]
        print(f"{self.name}: warm start from {self.init['checkpoint']} step {state['step']}"
              f"{' (weight average)' if self.init.get('ema') else ''}", flush=True)

    def _resume(self) -> None:
        state = torch.load(self.checkpoint_path, map_location="cpu")
        load_weights(self.model, state["model"])
        self.step = state["step"]
        if "optimizer" in state:  # checkpoints written before resume points left it out
            self.optimizer.load_state_dict(state["optimizer"])
        elif os.path.exists(self.optimizer_path):
            saved = torch.load(self.optimizer_path, map_location="cpu")
            if saved["step"] == self.step:
                self.optimizer.load_state_dict(saved["optimizer"])
            else:
                print(f"{self.optimizer_path}: step {saved['step']} is not the resume point's "
                      f"{self.step}; Adam restarts", flush=True)
        self.samples_seen = state["samples_seen"]
        self.best_val = state["info"].get("val_psnr")
        decay = self.config["train"].get("ema_decay")
        if decay and "ema" in state:
            self.ema = WeightAverage(self.model, decay)
            load_weights(self.ema.model, state["ema"])
            self.ema_since = state["info"]["ema"]["since_step"]
            self.ema_val = state["info"].get("val_psnr_ema")
        print(f"resumed {self.name} at step {self.step}", flush=True)

    def version(self) -> str:
        """The exported model's version: the step, prefixed by the run's name beyond the
        variant's (fsrst_x4_calls at step 1,200 -> "calls-1200"), so a warm-started run's
        versions never repeat its parent's."""
        if self.name == self.variant:
            return f"{self.step}"
        suffix = self.name[len(self.variant) + 1:] if self.name.startswith(
            self.variant + "_") else self.name
        return f"{suffix}-{self.step}"

    def learning_rate(self) -> float:
        train = self.config["train"]
        passed = sum(1 for m in train["lr_milestones"] if self.step >= m)
        return train["learning_rate"] * train["lr_gamma"] ** passed

    def save(self, val_psnr: float = None, ema_val_psnr: float = None) -> None:
        if val_psnr is not None:
            self.best_val = val_psnr
        if ema_val_psnr is not None:
            self.ema_val = ema_val_psnr
        info = {"trained": self.step > 0, "variant": self.variant, "steps": self.step,
                "samples_seen": self.samples_seen, "val_psnr": self.best_val,
                "data": os.path.basename(os.path.dirname(self.train_root)) + "/" +
                os.path.basename(self.train_root),
                "config": self.config, "version": self.version()}
        if self.model_overrides:
            info["model"] = self.model_overrides
        if self.video_train:
            info["data"] += " + " + os.path.basename(os.path.dirname(self.video_train)) + "/" + \
                os.path.basename(self.video_train)
        if self.init.get("checkpoint"):
            info["init"] = {"checkpoint": os.path.basename(self.init["checkpoint"]),
                            "ema": bool(self.init.get("ema")),
                            "from_step": self.init.get("from_step")}
        if self.val_extra:
            info["val"] = self.val_extra
        state = {"model": self.model.state_dict(), "step": self.step,
                 "samples_seen": self.samples_seen, "info": info}
        if self.ema is not None:
            info["ema"] = {"decay": self.ema.decay, "since_step": self.ema_since}
            info["val_psnr_ema"] = self.ema_val
            state["ema"] = self.ema.model.state_dict()
        atomic_save({"optimizer": self.optimizer.state_dict(), "step": self.step},
                    self.optimizer_path)
        atomic_save(state, self.checkpoint_path)

    def log(self, record: dict) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": self.step, **record}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    def train(self, max_minutes: float) -> None:
        train, log = self.config["train"], self.config["log"]
        batch_size = train["batch_size"]
        stop_at = time.time() + max_minutes * 60
        last_save = time.time()
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        self.model.train()
        loss_sum, loss_count, window_start = 0.0, 0, time.time()
        share_sum, share_count = 0.0, 0
        per_epoch = len(self.dataset)
        while self.step < train["max_steps"] and time.time() < stop_at and not stopping:
            epoch, offset = divmod(self.samples_seen, per_epoch)
            self.dataset.set_epoch(epoch)
            order = torch.randperm(per_epoch, generator=torch.Generator().manual_seed(
                self.config["seed"] * 7919 + epoch))
            indices = order[offset:offset + batch_size].tolist()
            batch = [self.dataset[i] for i in indices]
            lr = torch.stack([b[0] for b in batch])
            refs = torch.stack([b[1] for b in batch])
            mask = torch.stack([b[2] for b in batch])
            hr = torch.stack([b[3] for b in batch])
            wrong = torch.stack([b[4] for b in batch])
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate()
            loss, share = training_loss(self.model, lr, refs, mask, hr, wrong,
                                        self.wrong_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            self.samples_seen += len(indices)
            loss_sum += float(loss)
            loss_count += 1
            if share is not None and bool((wrong & mask).any()):
                share_sum += share
                share_count += 1
            if self.step % log["validate_every_steps"] == 0:
                elapsed = time.time() - window_start
                val = validate(self.model, self.val_samples)
                record = {"loss": loss_sum / loss_count, "val_psnr": val}
                ema_val = None
                if self.ema is not None:
                    ema_val = validate(self.ema.model, self.val_samples)
                    record["val_psnr_ema"] = ema_val
                scored = self.ema.model if self.ema is not None else self.model
                self.val_extra = {name: round(validate(scored, samples), 4)
                                  for name, samples in self.video_val_sets.items()}
                record.update(self.val_extra)
                record.update({"lr": self.learning_rate(),
                               "samples_per_s": loss_count * batch_size / elapsed,
                               "epoch": self.samples_seen / per_epoch})
                if share_count:
                    record["wrong_share"] = round(share_sum / share_count, 4)
                self.log(record)
                loss_sum, loss_count, window_start = 0.0, 0, time.time()
                share_sum, share_count = 0.0, 0
                self.save(val, ema_val)
                last_save = time.time()
            elif time.time() - last_save > log["checkpoint_every_s"]:
                self.save()
                last_save = time.time()
        self.save()
        print(f"stopped at step {self.step}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--max_minutes", type=float, default=1e9)
    parser.add_argument("--threads", type=int, help="overrides train.threads")
    args = parser.parse_args()
    config = load_config(args.config)
    torch.set_num_threads(args.threads or config["train"]["threads"])
    Trainer(config, args.config).train(args.max_minutes)


if __name__ == "__main__":
    main()
