"""Figures and tables regenerated from the run records under runs/."""
