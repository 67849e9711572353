"""Visual similarity: the image encoder and the Annoy index (see the visual-similarity issue; nothing here yet)."""
