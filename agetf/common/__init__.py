"""Helpers every part uses: folder locks, progress bars, flagfile checks."""
