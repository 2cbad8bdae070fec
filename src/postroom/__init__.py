"""postroom: the post room for applications, a self-hosted mail delivery system."""

__version__ = "0.1.0"
__all__ = ["__version__"]
