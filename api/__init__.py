"""The Flow Builder HTTP API (FastAPI)."""
