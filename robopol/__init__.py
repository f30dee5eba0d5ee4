"""robopol: generative (diffusion / flow) continuous-control policies."""

__version__ = "0.1.0"
