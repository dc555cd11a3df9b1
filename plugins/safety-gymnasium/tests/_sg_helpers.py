"""Constants shared by the safety-gymnasium plugin tests (a uniquely named module: ``conftest`` is ambiguous)."""

from __future__ import annotations

from pathlib import Path

import sb3_safe_safety_gymnasium

#: Path of the shim module, for tests that load a private copy of it in a fresh interpreter.
SHIM_PATH = Path(sb3_safe_safety_gymnasium.__file__).with_name("_shim.py")

# safety-gymnasium converts 1-element arrays with float()/int() on its hot path (deprecated since numpy 1.25,
# an error from numpy 2.4, hence the numpy<2.4 pin); not ours to fix, so keep it out of the warnings summary.
NUMPY_SCALAR_DEPRECATION = "ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning"

#: Code that loads a private copy of the shim as ``shim`` (without the package ``__init__`` applying it).
LOAD_SHIM_COPY = """
import importlib.util
_spec = importlib.util.spec_from_file_location("shim_under_test", SHIM_PATH)
shim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shim)
"""
