"""Sharded training of NNX models: the pure train step, the loop with orbax checkpoints and
exact resume, prediction, and classifier metrics (see ``docs/train.md``)."""

from ._classifier import class_logit as class_logit
from ._classifier import train_jet_classifier as train_jet_classifier
from ._foundation import PRETRAINED_PARTS as PRETRAINED_PARTS
from ._foundation import STRATEGIES as STRATEGIES
from ._foundation import codebook_utilisation as codebook_utilisation
from ._foundation import finetune as finetune
from ._foundation import fit_vqvae as fit_vqvae
from ._foundation import pretrain_mpm as pretrain_mpm
from ._foundation import strategy_optimizer as strategy_optimizer
from ._foundation import token_entropy as token_entropy
from ._loop import TrainState as TrainState
from ._loop import classifier_loss as classifier_loss
from ._loop import fit as fit
from ._loop import init_state as init_state
from ._loop import make_train_step as make_train_step
from ._loop import predict as predict
from ._loop import restore_latest as restore_latest
from ._loop import save_history as save_history
from ._metrics import accuracy as accuracy
from ._metrics import background_rejection as background_rejection
from ._metrics import binary_metrics as binary_metrics
from ._metrics import roc_auc as roc_auc
from ._metrics import roc_curve as roc_curve
from ._workflow import MODEL_SIZES as MODEL_SIZES
from ._workflow import backbone_config as backbone_config
from ._workflow import finetune_files as finetune_files
from ._workflow import fit_tokenizer_files as fit_tokenizer_files
from ._workflow import load_module as load_module
from ._workflow import load_tokenizer as load_tokenizer
from ._workflow import pretrain_files as pretrain_files
from ._workflow import save_module as save_module
