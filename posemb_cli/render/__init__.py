"""Renderers: each reads core's result objects and writes one format (table, JSON/CSV/NPZ, plots)."""
