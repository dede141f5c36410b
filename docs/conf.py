"""Sphinx configuration of daskmeans' documentation (MyST markdown pages, numpydoc docstrings).

Build: ``pip install -e '.[docs]' && sphinx-build -W -b html docs docs/_build/html``
"""

import daskmeans

project = "daskmeans"
author = "daskmeans contributors"
copyright = "daskmeans contributors"  # noqa: A001 (Sphinx's name)
version = release = daskmeans.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# MyST: the user guide is the markdown README sections moved over as they were.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# API reference: one page per public name, generated from the numpydoc docstrings.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

intersphinx_mapping = {}  # no network at build time: references stay local

html_theme = "alabaster"
html_title = f"daskmeans {release}"
html_static_path = []


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Members that a base class generates per subclass (scikit-learn's ``set_*_request`` metadata
    routing, matplotlib's ``Artist.set``) are documented by their own projects, not here."""
    module = getattr(obj, "__module__", None)
    if what == "class" and isinstance(module, str) and not module.startswith("daskmeans"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
