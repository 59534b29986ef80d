"""What both loops stand on: settings, errors, stores, the Weaviate connection, model runtime,
quarantine, the generic contract engine and the namespace lock."""
