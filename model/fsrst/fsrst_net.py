from dataclasses import dataclass, asdict
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fsrst.distance_aggregation import DistanceAggregation
from fsrst.feature_extractor import FeatureExtractor
from fsrst.local_search_aggregation import LocalSearchAggregation
from fsrst.output_constructor import OutputConstructor
from fsrst.spatial_transformer import SpatialTransformer


# -ln(1e-9): before the aggregation learned its threshold, its normaliser had a constant 1e-9
# where exp(-threshold) now is; weights saved then load with this value and behave as they did.
LEGACY_THRESHOLD = 20.7233


def load_weights(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """load_state_dict that also takes weights saved before the aggregation threshold existed."""
    state = dict(state)
    state.setdefault("aggregation.threshold", torch.tensor(LEGACY_THRESHOLD))
    model.load_state_dict(state)


@dataclass
class ModelConfig:
    """Shape of an FSRST model; travels inside the exported file as metadata."""

    name: str = "fsrst_x4"
    num_channels: int = 64      # nc: 64 is the paper's model, 32 its "small" one
    lr_size: int = 32           # L: low-resolution input is L x L RGB
    scale: int = 4              # s: output is (L*s) x (L*s)
    reference_size: int = 128   # R: references are R x R luma
    feature_channels: int = 3   # channels of every feature map
    lr_blocks: int = 5
    reference_blocks: int = 5
    output_blocks: int = 20
    max_references: int = 8     # most references one identity may register
    # The aggregation compares learned keys and adds learned values of the features
    # (fsrst/distance_aggregation.py); the paper compares and adds the features themselves.
    reference_projections: bool = False
    # 1: references are luma (the paper); 3: RGB, for the colour a compressed frame lost (JPEG
    # keeps a quarter of a 32x32 frame's chroma at 4:2:0); docs/model.md has what it bought.
    reference_channels: int = 1
    # 0: the aggregation compares each low-resolution pixel with the aligned reference at the
    # same place (the paper); r: also with the ones up to r pixels around it
    # (fsrst/local_search_aggregation.py).
    reference_search_radius: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class FSRST(nn.Module):
    """Reference-based face super-resolution (Jois, DiLillo, Storer, ACCV 2024).

    Two entry points, so a server encodes a person's references once:
      encode_references(refs [N,Cr,R,R] in [0,1]) -> [N,C,L,L] features; Cr = 1 (luma) or
          3 (RGB), reference_shape()[0]
      forward(lr [B,3,L,L] RGB in [0,1], ref_feats [B,K,C,L,L], ref_mask [B,K] bool)
          -> [B,3,L*s,L*s] in [0,1]
      forward_with_weights(same) -> (the same image, weights [B,K]: each reference's mean
          aggregation weight over the frame, masked slots 0)
    K may be 0. Masked slots have no influence on the output, and items of a
    batch are independent, so one batch may hold frames of many identities.

    Args:
        config: the model's shape (see ModelConfig).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.reference_size % config.lr_size != 0:
            raise ValueError("reference_size must be a multiple of lr_size")
        self.lr_size = config.lr_size
        self.scale = config.scale
        self.reference_size = config.reference_size
        self.feature_channels = config.feature_channels
        self.reference_channels = config.reference_channels
        self.unshuffle = config.reference_size // config.lr_size
        nc = config.num_channels
        self.lr_extractor = FeatureExtractor(3, nc, config.lr_blocks, config.feature_channels)
        self.reference_extractor = FeatureExtractor(
            config.reference_channels * self.unshuffle * self.unshuffle, nc,
            config.reference_blocks, config.feature_channels)
        self.aligner = SpatialTransformer(config.feature_channels, config.lr_size)
        if config.reference_search_radius > 0:
            self.aggregation = LocalSearchAggregation(config.reference_search_radius,
                                                      config.feature_channels,
                                                      config.reference_projections)
        else:
            self.aggregation = DistanceAggregation(config.feature_channels,
                                                   config.reference_projections)
        self.constructor = OutputConstructor(config.feature_channels, nc, config.output_blocks,
                                             config.scale)

    @torch.jit.export
    def feature_shape(self) -> List[int]:
        return [self.feature_channels, self.lr_size, self.lr_size]

    @torch.jit.export
    def reference_shape(self) -> List[int]:
        return [self.reference_channels, self.reference_size, self.reference_size]

    @torch.jit.export
    def encode_references(self, refs: torch.Tensor) -> torch.Tensor:
        r = self.reference_size
        cr = self.reference_channels
        if refs.dim() != 4 or refs.shape[1] != cr or refs.shape[2] != r or refs.shape[3] != r:
            raise ValueError("encode_references: refs must be [N, " + str(cr) + ", " + str(r)
                             + ", " + str(r) + "] " + ("luma" if cr == 1 else "RGB")
                             + ", got " + str(refs.shape))
        return self.reference_extractor(F.pixel_unshuffle(refs, self.unshuffle))

    def forward(self, lr: torch.Tensor, ref_feats: torch.Tensor,
                ref_mask: torch.Tensor) -> torch.Tensor:
        image, _ = self.forward_with_weights(lr, ref_feats, ref_mask)
        return image

    @torch.jit.export
    def forward_with_weights(self, lr: torch.Tensor, ref_feats: torch.Tensor,
                             ref_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """forward, and weights [B,K]: each reference's aggregation weight averaged over the
        frame's pixels (masked slots exactly 0); 1 - their sum is the share the model gave to
        none of them."""
        self._check_inputs(lr, ref_feats, ref_mask)
        lr_feat = self.lr_extractor(lr)
        b = ref_feats.shape[0]
        k = ref_feats.shape[1]
        if k == 0:
            return self.constructor(lr_feat, lr), lr.new_zeros((b, 0))
        shape = ref_feats.shape
        flat_refs = ref_feats.reshape(b * k, shape[2], shape[3], shape[4])
        flat_lr = lr_feat.unsqueeze(1).expand(b, k, shape[2], shape[3], shape[4]).reshape(
            b * k, shape[2], shape[3], shape[4])
        # A masked slot's content must never reach the output, not even as NaN * 0.
        flat_mask = ref_mask.reshape(b * k)[:, None, None, None]
        flat_refs = torch.where(flat_mask, flat_refs, torch.zeros_like(flat_refs))
        aligned = self.aligner(flat_lr, flat_refs).reshape(shape)
        fused, weight = self.aggregation.fuse(lr_feat, aligned, ref_mask)
        return self.constructor(fused, lr), weight.mean(dim=(2, 3, 4))

    def _check_inputs(self, lr: torch.Tensor, ref_feats: torch.Tensor,
                      ref_mask: torch.Tensor) -> None:
        size = self.lr_size
        c = self.feature_channels
        if lr.dim() != 4 or lr.shape[1] != 3 or lr.shape[2] != size or lr.shape[3] != size:
            raise ValueError("forward: lr must be [B, 3, " + str(size) + ", " + str(size)
                             + "] RGB, got " + str(lr.shape))
        b = lr.shape[0]
        if (ref_feats.dim() != 5 or ref_feats.shape[0] != b or ref_feats.shape[2] != c
                or ref_feats.shape[3] != size or ref_feats.shape[4] != size):
            raise ValueError("forward: ref_feats must be [" + str(b) + ", K, " + str(c) + ", "
                             + str(size) + ", " + str(size) + "], got " + str(ref_feats.shape))
        if (ref_mask.dim() != 2 or ref_mask.shape[0] != b
                or ref_mask.shape[1] != ref_feats.shape[1] or ref_mask.dtype != torch.bool):
            raise ValueError("forward: ref_mask must be bool [" + str(b) + ", "
                             + str(ref_feats.shape[1]) + "], got " + str(ref_mask.dtype) + " "
                             + str(ref_mask.shape))
