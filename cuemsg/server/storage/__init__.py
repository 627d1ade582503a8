"""Storage backends of the embedded server: the `Storage` protocol and row types
(`base.py`), SQLite (`sqlite.py`) and PostgreSQL (`postgres/`)."""
