"""Toy simulators written with :mod:`difphys.stochad` samplers (detector-design studies) and
the dimuon detector models of source estimation."""

from ._dimuon import MUON_MASS as MUON_MASS
from ._dimuon import DimuonLikelihood as DimuonLikelihood
from ._dimuon import cld_like_resolution as cld_like_resolution
from ._dimuon import reconstruct_dimuon as reconstruct_dimuon
from ._dimuon import smear_dimuon as smear_dimuon
from ._shower import DetectorConfig as DetectorConfig
from ._shower import Shower as Shower
from ._shower import density as density
from ._shower import mean_interaction_radius as mean_interaction_radius
from ._shower import objective as objective
from ._shower import simulate as simulate

__all__ = [
    "MUON_MASS",
    "DimuonLikelihood",
    "cld_like_resolution",
    "reconstruct_dimuon",
    "smear_dimuon",
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
