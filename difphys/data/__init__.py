"""Real jet samples from Pythia 8 + FastJet in the JetClass branch schema (optional extra
``data``: ``pip install 'difphys[data]'``).

Units: GeV, mm, Tesla. See ``docs/data.md``.
"""

from ._dimuon import DIMUON_SQRT_S as DIMUON_SQRT_S
from ._dimuon import DimuonSample as DimuonSample
from ._dimuon import dimuon_sample as dimuon_sample
from ._generate import CHUNK_EVENTS as CHUNK_EVENTS
from ._generate import SAMPLES as SAMPLES
from ._generate import TRACK_COV as TRACK_COV
from ._generate import TRACK_PARAMS as TRACK_PARAMS
from ._generate import GenerationReport as GenerationReport
from ._generate import generate as generate
from ._jets import cluster as cluster
from ._jets import softdrop_mass as softdrop_mass
from ._pythia import ORIGIN_B as ORIGIN_B
from ._pythia import ORIGIN_C as ORIGIN_C
from ._pythia import ORIGIN_OTHER as ORIGIN_OTHER
from ._pythia import ORIGIN_PRIMARY as ORIGIN_PRIMARY
from ._pythia import SETTINGS as SETTINGS
from ._pythia import heavy_flavour as heavy_flavour
