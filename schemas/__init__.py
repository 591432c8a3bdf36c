"""Pydantic contracts shared by every layer. Imports nothing else of Lightsout."""
