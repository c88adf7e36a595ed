"""memwarden's supervising process: sampling, pressure, policy, processes, PID 1, CLI."""

__version__ = "0.1.0"
