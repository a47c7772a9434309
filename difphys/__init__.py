"""difphys: a pure-functional, differentiable JAX toolkit for high-energy physics.

Units: GeV, mm, Tesla. Four-momenta are ``(..., 4)`` arrays ordered (E, px, py, pz) with the
particle axis second-to-last.

Every library subpackage is imported here; the application layer (``difphys.jobs``, the
functions behind the ``difphys`` command, which write files and plots) is imported on demand.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from . import amplitudes as amplitudes
from . import analysis as analysis
from . import data as data
from . import flows as flows
from . import io as io
from . import kinematics as kinematics
from . import nn as nn
from . import pdf as pdf
from . import phasespace as phasespace
from . import progress as progress
from . import sharding as sharding
from . import sim as sim
from . import stochad as stochad
from . import testing as testing
from . import train as train
from . import vertex as vertex

try:
    __version__ = _version("difphys")
except _PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
