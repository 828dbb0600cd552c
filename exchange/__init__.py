"""Patent-pool token exchange service."""
