"""netswap testbed: reproduce, measure and compare the Linux network-storage memory deadlock."""

__version__ = "0.1.0"
