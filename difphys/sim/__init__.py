"""Toy simulators written with :mod:`difphys.stochad` samplers (detector-design studies)."""

from ._shower import DetectorConfig as DetectorConfig
from ._shower import Shower as Shower
from ._shower import density as density
from ._shower import mean_interaction_radius as mean_interaction_radius
from ._shower import objective as objective
from ._shower import simulate as simulate

__all__ = [
    "DetectorConfig",
    "Shower",
    "density",
    "mean_interaction_radius",
    "objective",
    "simulate",
]
from ._design import DesignResult as DesignResult  # noqa: E402
from ._design import optimize_detector as optimize_detector  # noqa: E402

__all__ += ["DesignResult", "optimize_detector"]
