"""One module per ``lnlab`` sub-command; each exposes ``register(app)``."""
