"""Flax NNX networks: the Particle Transformer backbone (see ``docs/nn.md``).

Networks run in float32 (or bf16); physics inputs may be float64 and are cast at the boundary.
"""

from ._part import ParTConfig as ParTConfig
from ._part import ParticleTransformer as ParticleTransformer
from ._part import count_params as count_params
