"""The slow loop: house prompt -> answers -> behaviour evals, gap attribution, drift -> LoRA training -> promotion."""
