"""replica: paper-replication workspace for deep-learning theory."""

__version__ = "0.1.0"
