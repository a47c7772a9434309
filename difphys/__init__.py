"""difphys: a pure-functional, differentiable JAX toolkit for high-energy physics.

Units: GeV, mm, Tesla. Four-momenta are ``(..., 4)`` arrays ordered (E, px, py, pz) with the
particle axis second-to-last.
"""

from . import amplitudes as amplitudes
from . import flows as flows
from . import io as io
from . import kinematics as kinematics
from . import phasespace as phasespace
from . import sharding as sharding
from . import sim as sim
from . import stochad as stochad
from . import vertex as vertex

__version__ = "0.1.0"
