"""Shared helpers used by every area of the service: logging and the domain error tree."""
