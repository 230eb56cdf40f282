"""Analyses of trained or freshly built models (scale invariance, ...).

Kept import-light: import the submodule you need, e.g.
``from lnlab.analysis.scale_invariance import audit``.
"""
