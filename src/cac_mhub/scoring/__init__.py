"""Pure scoring code (Agatston, volume, mass, categories); numpy/scipy only, no chain imports."""
