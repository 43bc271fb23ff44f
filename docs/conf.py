"""Sphinx configuration. Build: ``python -m sphinx -W -b html docs docs/_build``."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import flask_session_bridge

project = "flask_session_bridge"
copyright = "2026, the flask_session_bridge authors"
release = flask_session_bridge.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
exclude_patterns = ["_build"]
