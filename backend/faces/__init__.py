"""Faces: detection with five landmarks, alignment, restoration and pasting back."""
