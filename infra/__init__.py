"""How the real services (Prefect server, Weaviate, MinIO) are installed, started, checked and stopped."""
