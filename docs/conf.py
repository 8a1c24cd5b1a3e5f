"""Sphinx configuration of the evograd documentation: the guides in docs/ and an API reference from the docstrings.

Build it from the repository root (``pip install -e '.[docs]'``)::

    python -m sphinx -W -b html docs build/docs
"""

from __future__ import annotations

import evograd

project = "evograd"
author = "the evograd authors"
copyright = "the evograd authors"
release = evograd.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # Google-style docstrings (Args/Returns/Raises/Examples)
]
exclude_patterns: list[str] = []
root_doc = "index"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # types beside the Args entries, not in long signatures
autosummary_generate = False  # the tables in api.rst link to the autodoc entries; no stub pages
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_static_path: list[str] = []
