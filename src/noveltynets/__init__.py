"""noveltynets: diffusion sampling that keeps producing samples unlike the ones before."""

__version__ = "0.1.0"
