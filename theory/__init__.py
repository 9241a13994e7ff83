"""Closed-form SSL settings and the registry of theory claims checked by experiments.bounds."""
