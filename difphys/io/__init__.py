"""File formats: Les Houches Event files (and, later, JetClass-schema ROOT files)."""

from ._lhe import colour_tags as colour_tags
from ._lhe import write_lhe as write_lhe
