"""finance solution: recipes (YAML) and the product users run."""
