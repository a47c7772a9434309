"""The class convention of the classifier jobs (one place, used by ``train`` and ``finetune``)."""

SIGNAL_CLASS = 0
"""The signal convention of every difphys classifier job: class ``k`` is the ``k``-th entry of
``--labels`` (for event-level tasks, class 0 is ``label_signal == 1``); the first entry is the
signal, scored by ``class_logit(logits, 0)`` in every ROC figure."""
