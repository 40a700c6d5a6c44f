"""Verbs of this module for the `etude` command line."""

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add this module's verbs to the `etude` parser."""
