"""Parton densities: LHAPDF ``lhagrid1`` sets read from disk and interpolated in JAX.

``pdf = difphys.pdf.load("NNPDF31_lo_as_0118", alpha_s=0.118)`` finds the set in
``$LHAPDF_DATA_PATH`` or in the pythia8mc wheel's ``share/Pythia8/pdfdata``;
``pdf.xfx(21, x, q)`` is ``x g(x, Q)`` (Q in GeV), differentiable in ``x`` and ``Q``.
"""

from ._lhagrid import PDFSet as PDFSet
from ._lhagrid import find as find
from ._lhagrid import load as load
from ._lhagrid import search_path as search_path
