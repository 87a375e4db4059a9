"""ghost-ablate: GhostNet's ablations and comparison tables, reproducible."""
__version__ = "0.1.0"
