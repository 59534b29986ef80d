"""The fast loop: landed documents -> contract -> chunks -> embeddings -> Weaviate index generations -> search."""
