"""Verbs of this package for the `etude` command line."""

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add this package's verbs to the `etude` parser."""
