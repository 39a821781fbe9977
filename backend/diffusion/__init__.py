"""Diffusion models for restoration: what a file is (families.py), how it loads (loading.py,
adapter.py for the model manager), colour fidelity (colour.py), one img2img pass with a soft
denoise mask (img2img.py) and the Ultimate SD Upscale tile plan (usdu.py).

Only families.py and adapter.py import nothing heavy: the registry lists diffusion files, and
the model manager knows the family, without diffusers installed.
"""
