"""labkit: the ML Learning Lab's library. The notebooks explain; this package implements."""

__version__ = "0.1.0"
