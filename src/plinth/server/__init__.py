"""The HTTP server: one FastAPI app that mounts every capability's router."""
