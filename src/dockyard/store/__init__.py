"""State store: SQLAlchemy tables, repositories and Alembic migrations."""
