"""Trains an FSRST variant, resumably.

    /usr/bin/python3 -m fsrst.train --config configs/fsrst_x4.yaml [--max_minutes 170]

Run from model/. Checkpoints (model, optimizer, step, RNG position, and the
weight average when train.ema_decay is set) go to checkpoints/<variant>.pt every
log.checkpoint_every_s seconds and at exit; a new run resumes from there. Loss and
validation PSNR (of the average too) are appended to checkpoints/<variant>.log.jsonl.
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

from fsrst.face_data import TrainingSamples, evaluation_samples
from fsrst.fsrst_net import FSRST
from fsrst.image_metrics import psnr
from fsrst.variants import config_for


def load_config(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def run_model(model: FSRST, lr: torch.Tensor, refs: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """lr [B,3,L,L], refs [B,K,1,R,R], mask [B,K] -> [B,3,H,H]."""
    b, k = refs.shape[:2]
    if k == 0:
        feats = lr.new_zeros((b, 0, *model.feature_shape()))
    else:
        feats = model.encode_references(refs.flatten(0, 1)).unflatten(0, (b, k))
    return model(lr, feats, mask)


@torch.no_grad()
def validate(model: FSRST, samples, batch_size: int = 16) -> float:
    model.eval()
    scores = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        lr = torch.stack([s[0] for s in chunk])
        refs = torch.stack([s[1] for s in chunk])
        hr = torch.stack([s[2] for s in chunk])
        mask = torch.ones(refs.shape[:2], dtype=torch.bool)
        scores.append(psnr(run_model(model, lr, refs, mask), hr))
    model.train()
    return float(torch.cat(scores).mean())


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


class Trainer:
    def __init__(self, config: dict, config_path: str):
        self.config = config
        self.variant = config["variant"]
        base = os.path.dirname(os.path.abspath(config_path))
        model_dir = os.path.dirname(base)
        resolve = lambda p: p if os.path.isabs(p) else os.path.normpath(os.path.join(model_dir, p))
        data = config["data"]
        self.train_root, self.val_root = resolve(data["train"]), resolve(data["val"])
        self.checkpoint_path = os.path.join(model_dir, "checkpoints", self.variant + ".pt")
        self.log_path = os.path.join(model_dir, "checkpoints", self.variant + ".log.jsonl")
        os.makedirs(os.path.dirname(self.checkpoint_path), exist_ok=True)
        train = config["train"]
        torch.manual_seed(config["seed"])
        self.model = FSRST(config_for(self.variant))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train["learning_rate"])
        self.step = 0
        self.samples_seen = 0
        self.dataset = TrainingSamples(self.train_root, data["num_references"],
                                       augment=config["augment"], seed=config["seed"])
        self.val_samples = evaluation_samples(self.val_root, data["num_references"])[
            :config["log"]["validate_samples"]]
        self.best_val = None
        self.ema_val = None
        self.ema = None
        self.ema_since = None  # the step the average started from
        if os.path.exists(self.checkpoint_path):
            self._resume()
        if train.get("ema_decay") and self.ema is None:
            # From the current weights: at step 0, or when a run without it resumes.
            self.ema = WeightAverage(self.model, train["ema_decay"])
            self.ema_since = self.step

    def _resume(self) -> None:
        state = torch.load(self.checkpoint_path, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.samples_seen = state["samples_seen"]
        self.best_val = state["info"].get("val_psnr")
        decay = self.config["train"].get("ema_decay")
        if decay and "ema" in state:
            self.ema = WeightAverage(self.model, decay)
            self.ema.model.load_state_dict(state["ema"])
            self.ema_since = state["info"]["ema"]["since_step"]
            self.ema_val = state["info"].get("val_psnr_ema")
        print(f"resumed {self.variant} at step {self.step}", flush=True)

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
                "config": self.config, "version": f"{self.step}"}
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": self.step, "samples_seen": self.samples_seen, "info": info}
        if self.ema is not None:
            info["ema"] = {"decay": self.ema.decay, "since_step": self.ema_since}
            info["val_psnr_ema"] = self.ema_val
            state["ema"] = self.ema.model.state_dict()
        tmp = self.checkpoint_path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def log(self, record: dict) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": self.step, **record}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    def train(self, max_minutes: float) -> None:
        train, log = self.config["train"], self.config["log"]
        batch_size = train["batch_size"]
        dropout = self.config["data"]["reference_dropout"]
        stop_at = time.time() + max_minutes * 60
        last_save = time.time()
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        gen = torch.Generator().manual_seed(self.config["seed"])
        self.model.train()
        loss_sum, loss_count, window_start = 0.0, 0, time.time()
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
            hr = torch.stack([b[2] for b in batch])
            gen.manual_seed(self.config["seed"] + self.step)
            mask = torch.rand(refs.shape[:2], generator=gen) >= dropout
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate()
            loss = F.l1_loss(run_model(self.model, lr, refs, mask), hr)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            self.samples_seen += len(indices)
            loss_sum += float(loss)
            loss_count += 1
            if self.step % log["validate_every_steps"] == 0:
                elapsed = time.time() - window_start
                val = validate(self.model, self.val_samples)
                record = {"loss": loss_sum / loss_count, "val_psnr": val}
                ema_val = None
                if self.ema is not None:
                    ema_val = validate(self.ema.model, self.val_samples)
                    record["val_psnr_ema"] = ema_val
                record.update({"lr": self.learning_rate(),
                               "samples_per_s": loss_count * batch_size / elapsed,
                               "epoch": self.samples_seen / per_epoch})
                self.log(record)
                loss_sum, loss_count, window_start = 0.0, 0, time.time()
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
