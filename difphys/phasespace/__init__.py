"""n-body phase space: RAMBO, a smooth unit-cube map, closed-form volumes and MC integration.

Weight convention everywhere: ``E[w f(p)] = int f dPhi_n`` with
``dPhi_n = (2 pi)^4 delta^4(P - sum p) prod d^3p_i / ((2 pi)^3 2 E_i)``, so a cross section with
a massless initial state is ``sigma = E[w |M|^2] / (2 s)`` (GeV^-2; times 0.3893794e9 for pb).
"""

from ._decay_tree import decay_tree_dim as decay_tree_dim
from ._decay_tree import decay_tree_from_unit_cube as decay_tree_from_unit_cube
from ._integrate import IntegrationResult as IntegrationResult
from ._integrate import integrate as integrate
from ._integrate import sample_batch as sample_batch
from ._montecarlo import hit_or_miss as hit_or_miss
from ._rambo import rambo as rambo
from ._resonant import RESONANT_PAIR_DIM as RESONANT_PAIR_DIM
from ._resonant import breit_wigner_map as breit_wigner_map
from ._resonant import resonant_pair_from_unit_cube as resonant_pair_from_unit_cube
from ._unit_cube import from_unit_cube as from_unit_cube
from ._unit_cube import two_body_decay as two_body_decay
from ._unit_cube import unit_cube_dim as unit_cube_dim
from ._volume import massless_volume as massless_volume
from ._volume import two_body_volume as two_body_volume
