"""The defect archive (run --archive): stored parts, their index (SQLite or PostgreSQL), retention, export."""
