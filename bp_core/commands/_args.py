"""Argument types shared by the ``bp`` sub-commands (errors become one-line usage errors)."""

from __future__ import annotations

import argparse


def positive(kind):
    """An argparse ``type`` accepting numbers of ``kind`` (int or float) above zero."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse
