"""Persistence: SQLAlchemy 2 async engine, sessions, models and repositories.

Repositories take an ``AsyncSession`` and only ``flush()``; the request's session
dependency (``exchange.db.session``) owns the one commit or rollback.
"""
