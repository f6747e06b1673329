"""Framework-specific fast paths for the doubly-normalized attention."""
