"""The durable store: SQLModel tables, Alembic migrations and the queries the flows need."""
