"""Settings parsed once from the environment (imports nothing of ours)."""

from config.settings import Settings

__all__ = ["Settings"]
