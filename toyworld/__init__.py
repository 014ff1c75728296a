"""Toy world: a synthetic clip world and the small text-to-video model trained on it (the bundled demo model)."""
