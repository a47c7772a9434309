"""File formats: Les Houches Event files and JetClass-schema ROOT files (uproot)."""

from ..kinematics import pairwise_features as pairwise_features
from ._batches import batches as batches
from ._batches import epoch_batches as epoch_batches
from ._batches import epoch_order as epoch_order
from ._batches import trim_padding as trim_padding
from ._jetclass import JET_BRANCHES as JET_BRANCHES
from ._jetclass import PART_FEATURES as PART_FEATURES
from ._jetclass import PARTICLE_BRANCHES as PARTICLE_BRANCHES
from ._jetclass import iterate_jetclass as iterate_jetclass
from ._jetclass import load_events as load_events
from ._jetclass import load_jets as load_jets
from ._jetclass import part_features as part_features
from ._jetclass import part_p4 as part_p4
from ._jetclass import read_jetclass as read_jetclass
from ._jetclass import write_jetclass as write_jetclass
from ._lhe import colour_tags as colour_tags
from ._lhe import write_lhe as write_lhe
from ._table import Table as Table
from ._table import concatenate as concatenate
from ._tracks import FLAVOUR_LABELS as FLAVOUR_LABELS
from ._tracks import TRACK_COV as TRACK_COV
from ._tracks import TRACK_FEATURES as TRACK_FEATURES
from ._tracks import TRACK_PARAMS as TRACK_PARAMS
from ._tracks import jet_axis as jet_axis
from ._tracks import jet_tracks as jet_tracks
from ._tracks import load_tracks as load_tracks
