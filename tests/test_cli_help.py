"""Every CLI's ``--help`` states each option's default (the newcomer's path: read --help, run)."""

from __future__ import annotations

import argparse
import importlib

import pytest

CLIS = ["training.fit", "training.export", "training.calibrate", "training.evaluate",
        "streaming.live", "streaming.report", "streaming.bench", "streaming.tune"]


@pytest.mark.parametrize("module", CLIS)
def test_help_shows_every_default(module):
    parser = importlib.import_module(module).build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:  # positional, or a flag
            continue
        if action.required or action.default is argparse.SUPPRESS:
            continue
        text = formatter._get_help_string(action) or ""
        assert "default" in text.lower(), f"{module} {action.option_strings[0]}: {text!r}"
    assert "default" in parser.format_help()
