"""Model folders (config, model card, and weights where a model is bundled).

Installed as the package ``flamcli._bundled`` so that bundled weights ship inside the wheel;
this file only makes the folder importable for that mapping.
"""
