"""The CNI specification versions the pycalico plugins accept.

Its own module, with no imports, so the thin plugin executables can answer ``VERSION`` without
loading anything else.
"""

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
