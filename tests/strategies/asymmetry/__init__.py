"""Tests of the asymmetry strategies."""
