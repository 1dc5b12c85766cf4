"""Contrastive collapse-prevention strategies."""
