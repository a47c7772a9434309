"""Flax NNX networks: the Particle Transformer backbone, and the multi-task MLP with the
neuron masks of continual learning (see ``docs/nn.md``, ``docs/continual.md``).

Networks run in float32 (or bf16); physics inputs may be float64 and are cast at the boundary.
"""

from ._continual import FREE as FREE
from ._continual import MultiTaskMLP as MultiTaskMLP
from ._continual import NeuronMasks as NeuronMasks
from ._continual import isolate as isolate
from ._continual import reset_free_units as reset_free_units
from ._continual import trainable_masks as trainable_masks
from ._continual_part import MultiTaskParT as MultiTaskParT
from ._dropout import Dropout as Dropout
from ._dropout import dropout_keep_mask as dropout_keep_mask
from ._heads import ANGULAR_FEATURES as ANGULAR_FEATURES
from ._heads import TOKEN_FEATURES as TOKEN_FEATURES
from ._heads import DeepSetsHead as DeepSetsHead
from ._heads import EventClassifier as EventClassifier
from ._heads import JetClassifier as JetClassifier
from ._heads import MaskedParticleModel as MaskedParticleModel
from ._heads import MPMMetrics as MPMMetrics
from ._heads import check_token_features as check_token_features
from ._heads import mpm_loss as mpm_loss
from ._part import MODEL_SIZES as MODEL_SIZES
from ._part import ParTConfig as ParTConfig
from ._part import ParticleTransformer as ParticleTransformer
from ._part import count_params as count_params
from ._tokenizers import VQVAE as VQVAE
from ._tokenizers import KMeansTokenizer as KMeansTokenizer
from ._tokenizers import VQMetrics as VQMetrics
from ._vertex_tagger import VERTEX_FEATURES as VERTEX_FEATURES
from ._vertex_tagger import VERTEX_MODES as VERTEX_MODES
from ._vertex_tagger import TaggerMetrics as TaggerMetrics
from ._vertex_tagger import TaggerOutput as TaggerOutput
from ._vertex_tagger import VertexTagger as VertexTagger
from ._vertex_tagger import tagger_loss as tagger_loss
