"""Guest images: recipes (top-level images/), building them with mmdebstrap, and the recipe-hash cache."""
