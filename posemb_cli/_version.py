"""posemb's version, in a leaf module: what needs it imports this, never the package (whose __init__ lazily
imports the core)."""

__version__ = "0.4.0"
