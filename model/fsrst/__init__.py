"""FSRST: reference-based face super-resolution with a spatial transformer.

Jois, DiLillo, Storer, "Face Super-Resolution using Spatial Transformer"
(ACCV 2024). The network is split in two so that a server can encode a
person's references once and reuse the features for every frame:
``encode_references`` and ``forward`` (see fsrst_net.FSRST).
"""

from fsrst.fsrst_net import FSRST, ModelConfig  # noqa: F401
