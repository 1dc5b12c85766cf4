"""Capacity collapse-prevention strategies."""
