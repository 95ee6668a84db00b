"""The clinical side: the read-only SQL source and its join with the image catalog."""
