"""The command groups of `python -m lightsout`: each module registers its commands."""
