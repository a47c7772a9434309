"""Sharded training of NNX models: the pure train step, the loop with orbax checkpoints and
exact resume, prediction, classifier metrics, fine-tuning strategies, continual learning
(CLNP and EWC; ``docs/continual.md``) and the flavour tagger
(see ``docs/train.md``). Nothing here writes a run folder: the jobs behind ``difphys train``,
``tokenize``, ``pretrain`` and ``finetune`` live in :mod:`difphys.jobs`."""

from ._checkpoint import load_module as load_module
from ._checkpoint import restore_latest as restore_latest
from ._checkpoint import restore_pytree as restore_pytree
from ._checkpoint import save_module as save_module
from ._checkpoint import save_pytree as save_pytree
from ._continual import ContinualMetrics as ContinualMetrics
from ._continual import GracefulChoice as GracefulChoice
from ._continual import LayerCapacity as LayerCapacity
from ._continual import activation_l1 as activation_l1
from ._continual import allocate as allocate
from ._continual import capacity_report as capacity_report
from ._continual import continual_loss as continual_loss
from ._continual import continual_optimizer as continual_optimizer
from ._continual import ewc_penalty as ewc_penalty
from ._continual import fisher_diagonal as fisher_diagonal
from ._continual import frozen as frozen
from ._continual import graceful_threshold as graceful_threshold
from ._continual import neuron_activity as neuron_activity
from ._flavour import TAGGER_INPUTS as TAGGER_INPUTS
from ._flavour import FlavourMetrics as FlavourMetrics
from ._flavour import TaggerResult as TaggerResult
from ._flavour import VertexBin as VertexBin
from ._flavour import b_discriminant as b_discriminant
from ._flavour import evaluate_tagger as evaluate_tagger
from ._flavour import flavour_metrics as flavour_metrics
from ._flavour import train_flavour_tagger as train_flavour_tagger
from ._flavour import vertex_performance as vertex_performance
from ._foundation import HEAD_WARMUP_FRACTION as HEAD_WARMUP_FRACTION
from ._foundation import PRETRAINED_PARTS as PRETRAINED_PARTS
from ._foundation import STRATEGIES as STRATEGIES
from ._foundation import codebook_utilisation as codebook_utilisation
from ._foundation import finetune as finetune
from ._foundation import fit_vqvae as fit_vqvae
from ._foundation import masked_loss as masked_loss
from ._foundation import pretrain_mpm as pretrain_mpm
from ._foundation import strategy_optimizer as strategy_optimizer
from ._foundation import token_entropy as token_entropy
from ._loop import ClassifierMetrics as ClassifierMetrics
from ._loop import StepInfo as StepInfo
from ._loop import TrainState as TrainState
from ._loop import classifier_loss as classifier_loss
from ._loop import fit as fit
from ._loop import init_state as init_state
from ._loop import make_train_step as make_train_step
from ._loop import predict as predict
from ._metrics import BinaryMetrics as BinaryMetrics
from ._metrics import accuracy as accuracy
from ._metrics import background_rejection as background_rejection
from ._metrics import binary_metrics as binary_metrics
from ._metrics import class_logit as class_logit
from ._metrics import roc_auc as roc_auc
from ._metrics import roc_curve as roc_curve
from ._run import History as History
from ._run import Trainer as Trainer
from ._run import training_loop as training_loop
from ._token_inputs import IMPACT_FEATURES as IMPACT_FEATURES
from ._token_inputs import ContextFreeBaseline as ContextFreeBaseline
from ._token_inputs import RankGauss as RankGauss
from ._token_inputs import TokenInputs as TokenInputs
from ._token_inputs import context_free_baseline as context_free_baseline
from ._token_inputs import neutral_impact_mask as neutral_impact_mask
from ._token_inputs import token_r2 as token_r2
