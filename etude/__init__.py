"""ETUDE: will this session-based recommender meet its latency SLO at this traffic, on this machine, at what cost?

This package holds what both sides share, with light imports only: the experiment spec (`etude.spec`), the
instance-type catalog (`etude.catalog`), the command lines of an experiment (`etude.commands`), the
result-file contract (`etude.results`), URI storage (`etude.storage`) and the `etude` command line (`etude.cli`).
"""

__version__ = "0.1.0"
