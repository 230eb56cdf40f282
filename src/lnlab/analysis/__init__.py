"""Analyses of trained or freshly built models (scale invariance, ...).

Kept import-light: import the submodule you need, e.g.
``from lnlab.analysis.scale_invariance import audit``.

LayerNorm's nonlinearity (Ni et al. 2024): ``lnnet`` (explicit width-3 LN-Nets, VC demo,
layer-by-layer drawing), ``ssr`` (SSR / LSSR), ``nonlinearity`` (Hessian measure of LN-G).
"""
