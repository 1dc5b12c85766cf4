"""Asymmetry collapse-prevention strategies."""
