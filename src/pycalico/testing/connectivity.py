"""The connectivity matrix checker, for tests: a re-export of ``pycalico.netns.connectivity``.

What it is: the import path the tests have always used.  What it is not: a second checker; the
code lives in ``pycalico.netns.connectivity`` so that the lab (runtime) does not depend on test
support.

Invariants: every name here is the very object ``pycalico.netns.connectivity`` defines.
"""

from __future__ import annotations

from pycalico.netns.connectivity import ConnectivityChecker as ConnectivityChecker
from pycalico.netns.connectivity import Endpoint as Endpoint
from pycalico.netns.connectivity import MatrixMismatch as MatrixMismatch
from pycalico.netns.connectivity import Probe as Probe
from pycalico.netns.connectivity import Protocol as Protocol
from pycalico.netns.connectivity import format_matrix as format_matrix
