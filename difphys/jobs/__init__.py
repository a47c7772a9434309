"""The application layer: one module per ``difphys`` subcommand. These functions take an
integer ``seed``, read and write files (run folders, checkpoints, LHE, plots) and return a
:class:`Report` whose ``summary()`` the command line prints; the libraries under them take
keys and write nothing.

| command             | function                                   | module              |
|---------------------|--------------------------------------------|---------------------|
| `demo`              | :func:`run_demo`                           | ``jobs/demo.py``    |
| `optimize-detector` | :func:`detector_study`                     | ``jobs/detector.py``|
| `sample`            | :func:`sample_events`                      | ``jobs/sample.py``  |
| `generate`          | :func:`generate` (``difphys.data``)        | ``difphys/data``    |
| `train`             | :func:`train_jet_classifier`               | ``jobs/classify.py``|
| `train --data-config`, `predict` | :func:`train_from_data_config`, :func:`predict_files` | ``jobs/train_config.py`` |
| `tokenize`, `pretrain`, `finetune` | :func:`fit_tokenizer_files`, :func:`pretrain_files`, :func:`finetune_files` | ``jobs/foundation.py`` |

Run folders follow one policy (:func:`prepare_run_dir`: new | overwrite | resume) and the
signal of every classifier job is class 0, the first label (:data:`SIGNAL_CLASS`).
"""

from ..data import generate as generate
from ._classes import SIGNAL_CLASS as SIGNAL_CLASS
from ._report import Report as Report
from ._runs import RUN_POLICIES as RUN_POLICIES
from ._runs import new_run_dir as new_run_dir
from ._runs import prepare_run_dir as prepare_run_dir
from ._runs import save_history as save_history
from .classify import train_jet_classifier as train_jet_classifier
from .demo import format_report as format_report
from .demo import run_demo as run_demo
from .detector import detector_study as detector_study
from .foundation import finetune_files as finetune_files
from .foundation import fit_tokenizer_files as fit_tokenizer_files
from .foundation import load_tokenizer as load_tokenizer
from .foundation import pretrain_files as pretrain_files
from .foundation import pretrain_supervised_files as pretrain_supervised_files
from .sample import SAMPLING_METHODS as SAMPLING_METHODS
from .sample import sample_events as sample_events
from .train_config import TrainedRun as TrainedRun
from .train_config import load_trained as load_trained
from .train_config import predict_files as predict_files
from .train_config import train_from_data_config as train_from_data_config
