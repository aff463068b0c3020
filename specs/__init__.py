"""Ready-to-run example specs, one per lecture model (shipped as package data)."""
