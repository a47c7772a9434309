"""Four-vector kinematics: pure ``jnp`` functions on ``(..., 4)`` arrays ordered (E, px, py, pz).

Units: GeV. Metric ``(+, -, -, -)``. All functions are safe under ``jit``, ``vmap`` and ``grad``:
at singular points (``pt = 0``, ``|p| = 0``, ``m^2 = 0``) they return the documented finite values
with zero gradients instead of NaN.
"""

from ._components import INFINITE_RAPIDITY as INFINITE_RAPIDITY
from ._components import delta_phi as delta_phi
from ._components import delta_r as delta_r
from ._components import eta as eta
from ._components import from_pt_eta_phi_m as from_pt_eta_phi_m
from ._components import p3 as p3
from ._components import p_abs as p_abs
from ._components import phi as phi
from ._components import pt as pt
from ._components import rapidity as rapidity
from ._invariants import dot as dot
from ._invariants import mass as mass
from ._invariants import mass2 as mass2
from ._pairwise import PAIR_EPS as PAIR_EPS
from ._pairwise import pairwise_features as pairwise_features
from ._transforms import boost as boost
from ._transforms import boost_from_rest_frame as boost_from_rest_frame
from ._transforms import boost_to_rest_frame as boost_to_rest_frame
from ._transforms import rotate as rotate
