"""remote-steer: CAA steering sweeps with nnsight, locally or on NDIF."""

__version__ = "0.1.0"
