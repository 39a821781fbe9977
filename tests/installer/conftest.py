"""The one-command installer, its PyTorch choice, the plug-in folders, the login service and the
backend launcher.
"""
