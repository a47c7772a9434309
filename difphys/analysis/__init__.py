"""Physics analyses through the differentiable program: unbinned likelihood fits of model
parameters through matrix elements, minimised by L-BFGS or by MINUIT (iminuit, with the
exact gradient; see ``docs/analysis.md``)."""

from ._lineshape import FitResult as FitResult
from ._lineshape import ScanPoint as ScanPoint
from ._lineshape import fit_scan as fit_scan
from ._lineshape import pseudo_data as pseudo_data
from ._lineshape import scan_nll as scan_nll
from ._lineshape import unweighted_events as unweighted_events
from ._minuit import MinuitResult as MinuitResult
from ._minuit import minuit_fit as minuit_fit
