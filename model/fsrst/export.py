"""Exports an FSRST variant to TorchScript with its metadata, and checks it.

    /usr/bin/python3 -m fsrst.export --variant fsrst_x4 [--checkpoint ckpt.pt [--ema]] \
        [--out weights/fsrst_x4.pt]

Export = script, save (metadata.json inside the file), reload, compare with
eager on random inputs (atol 1e-5). Without --checkpoint the weights are the
seeded random initialisation and the metadata says "trained": false.
"""

import argparse
import io
import json
import os
from typing import Optional

import torch

from fsrst.fsrst_net import FSRST, load_weights
from fsrst.variants import config_for

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1


def build_model(variant: str, checkpoint: Optional[str] = None, seed: int = 0,
                ema: bool = False):
    """Returns (eager model in eval mode, training info dict from the checkpoint or {}).
    ema: the checkpoint's weight average instead of its last weights; the info then says
    so ("weights": "ema") and its val_psnr is the average's."""
    torch.manual_seed(seed)
    state, info = {}, {}
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu")
        info = dict(state.get("info", {}))
    model = FSRST(config_for(variant, info.get("model")))
    if checkpoint:
        if ema:
            if "ema" not in state:
                raise ValueError(f"{checkpoint}: no weight average (train.ema_decay was not set)")
            load_weights(model, state["ema"])
            info.update(weights="ema", val_psnr=info.get("val_psnr_ema"))
        else:
            load_weights(model, state["model"])
    elif ema:
        raise ValueError("--ema needs --checkpoint")
    return model.eval(), info


def metadata_for(model: FSRST, variant: str, info: dict) -> dict:
    config = config_for(variant, info.get("model"))
    return {
        "format_version": FORMAT_VERSION,
        "name": variant,
        "version": str(info.get("version", "0-untrained")),
        "lr_size": config.lr_size,
        "scale": config.scale,
        "reference_size": config.reference_size,
        "feature_shape": model.feature_shape(),
        "reference_shape": model.reference_shape(),
        "max_references": config.max_references,
        "num_channels": config.num_channels,
        "reference_projections": config.reference_projections,
        "reference_search_radius": config.reference_search_radius,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained": bool(info.get("trained", False)),
        "training": info,
        "torch_version": torch.__version__,
    }


def read_metadata(path: str) -> dict:
    extra = {METADATA_FILE: ""}
    torch.jit.load(path, map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_FILE])


def check_faithful(model: FSRST, scripted, atol: float = 1e-5) -> float:
    """Compares eager and scripted outputs (forward, and forward_with_weights' image and
    weights) on random inputs; returns the max difference of the images."""
    gen = torch.Generator().manual_seed(1)
    lr = torch.rand(3, 3, model.lr_size, model.lr_size, generator=gen)
    refs = torch.rand(6, *model.reference_shape(), generator=gen)
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    with torch.no_grad():
        eager_feats = model.encode_references(refs)
        script_feats = scripted.encode_references(refs)
        torch.testing.assert_close(script_feats, eager_feats, atol=atol, rtol=0)
        feats = eager_feats[:, None].reshape(3, 2, *eager_feats.shape[1:])
        feats = torch.cat([feats, feats[:, :1]], dim=1)
        eager_out = model(lr, feats, mask)
        script_out = scripted(lr, feats, mask)
        eager_weights = model.forward_with_weights(lr, feats, mask)[1]
        script_image, script_weights = scripted.forward_with_weights(lr, feats, mask)
    torch.testing.assert_close(script_out, eager_out, atol=atol, rtol=0)
    torch.testing.assert_close(script_image, script_out, atol=0, rtol=0)
    torch.testing.assert_close(script_weights, eager_weights, atol=atol, rtol=0)
    return float((script_out - eager_out).abs().max())


def export(variant: str, out: str, checkpoint: Optional[str] = None,
           ema: bool = False) -> dict:
    model, info = build_model(variant, checkpoint, ema=ema)
    metadata = metadata_for(model, variant, info)
    scripted = torch.jit.script(model)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer, _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
    with open(out, "wb") as f:
        f.write(buffer.getvalue())
    reloaded = torch.jit.load(out, map_location="cpu")
    check_faithful(model, reloaded)
    if read_metadata(out) != metadata:
        raise RuntimeError(f"{out}: metadata did not survive the round trip")
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", required=True, help="fsrst_x4 or fsrst_x4_small")
    parser.add_argument("--checkpoint", help="training checkpoint to export (default: random init)")
    parser.add_argument("--ema", action="store_true",
                        help="export the checkpoint's weight average (train.ema_decay)")
    parser.add_argument("--out", help="output file (default: weights/<variant>.pt beside fsrst/)")
    args = parser.parse_args()
    out = args.out or os.path.join(os.path.dirname(os.path.dirname(__file__)), "weights",
                                   args.variant + ".pt")
    metadata = export(args.variant, out, args.checkpoint, args.ema)
    print(f"exported {out}: {metadata['parameters']} parameters, trained={metadata['trained']}")


if __name__ == "__main__":
    main()
