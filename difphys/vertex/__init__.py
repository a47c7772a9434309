"""Vertex fitting: helix track parameters, simulation, a Billoir fit with implicit gradients.

Units: mm, GeV, Tesla (B along +z). Perigee parameters (d0, z0, phi0, theta, qoverp) with
respect to the origin, ACTS conventions (point of closest approach ``(-d0 sin phi0, d0 cos phi0, z0)``).
"""

from ._fit import WEAK_PRIOR_SIGMA as WEAK_PRIOR_SIGMA
from ._fit import BeamSpot as BeamSpot
from ._fit import VertexFit as VertexFit
from ._fit import fit as fit
from ._helix import C_LIGHT as C_LIGHT
from ._helix import curvature as curvature
from ._helix import local_to_momentum as local_to_momentum
from ._helix import momentum_to_local as momentum_to_local
from ._helix import perigee_from_local as perigee_from_local
from ._helix import perigee_from_state as perigee_from_state
from ._helix import perigee_jacobians as perigee_jacobians
from ._helix import state_at_vertex as state_at_vertex
from ._tracks import Perigee as Perigee
from ._tracks import TrackResolution as TrackResolution
from ._tracks import simulate_tracks as simulate_tracks
