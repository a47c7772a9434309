"""Differentiable tree-level matrix elements: HELAS-style wavefunctions and vertices, SM
parameters with param-card I/O, a compiler for any tree-level process of the ``sm`` model
(MadGraph syntax) and cross sections.

Spinors/vectors are complex ``(..., 4)`` arrays in the chiral Dirac basis; momenta in GeV.
"""

from ._berends_giele import gluon_amplitude as gluon_amplitude
from ._berends_giele import quark_line_amplitude as quark_line_amplitude
from ._colour_flow import ColourFlows as ColourFlows
from ._colour_flow import colour_flow_weights as colour_flow_weights
from ._colour_flow import colour_flows as colour_flows
from ._colour_flow import sample_colour_flow as sample_colour_flow
from ._compile import MULTIPARTICLES as MULTIPARTICLES
from ._compile import ProcessSet as ProcessSet
from ._compile import parse as parse
from ._compile import process as process
from ._cross_section import GEV2_TO_PB as GEV2_TO_PB
from ._cross_section import CrossSection as CrossSection
from ._cross_section import Histogram as Histogram
from ._cross_section import check_hadronic as check_hadronic
from ._cross_section import cross_section as cross_section
from ._cross_section import dsigma as dsigma
from ._cross_section import hadronic_integrand as hadronic_integrand
from ._cross_section import parton_groups as parton_groups
from ._cross_section import sigma_integrand as sigma_integrand
from ._dirac import GAMMA as GAMMA
from ._dirac import GAMMA5 as GAMMA5
from ._dirac import mdot as mdot
from ._dirac import slash as slash
from ._params import SMParams as SMParams
from ._process import Process as Process
from ._resonances import BW_CUTOFF as BW_CUTOFF
from ._resonances import Resonance as Resonance
from ._resonances import resonances as resonances
from ._vertices import fermion_current as fermion_current
from ._vertices import fermion_propagator as fermion_propagator
from ._vertices import ffs_amplitude as ffs_amplitude
from ._vertices import ffv_amplitude as ffv_amplitude
from ._vertices import scalar_propagator as scalar_propagator
from ._vertices import vector_propagator as vector_propagator
from ._vertices import vvv_vertex as vvv_vertex
from ._vertices import vvvv_vertex as vvvv_vertex
from ._wavefunctions import polarization_vector as polarization_vector
from ._wavefunctions import u_spinor as u_spinor
from ._wavefunctions import ubar_spinor as ubar_spinor
from ._wavefunctions import v_spinor as v_spinor
from ._wavefunctions import vbar_spinor as vbar_spinor
