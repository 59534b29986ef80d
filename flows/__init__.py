"""Prefect flows that tell the story of the two hybridops loops, and the CLI that drives them."""
