"""docs/cli.md, generated from the argument parser itself, so every command and option the CLI
has is documented with the text its --help shows, and a test (tests/test_docs.py) fails when the
committed page is stale. Regenerate: ``python -m nirbench.harness.cli.reference > docs/cli.md``."""

from __future__ import annotations

import argparse
import os

REGENERATE = "python -m nirbench.harness.cli.reference > docs/cli.md"
# argparse wraps help text to the terminal's width; the page must not depend on it.
WIDTH = "100"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.extend(action.choices.items())
    return out


def _walk(parser: argparse.ArgumentParser, prefix: str):
    yield prefix, parser
    for name, child in _subcommands(parser):
        yield from _walk(child, f"{prefix} {name}")


def reference_markdown() -> str:
    """The whole page: one section per command and subcommand, its --help verbatim."""
    from nirbench.harness.cli.main import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        commands = list(_walk(parser, "nirbench"))
        lines = [
            "# Command reference",
            "",
            "Every command and option of `nirbench`, as its `--help` prints it (generated "
            f"from the parser: `{REGENERATE}`). What each is for, with examples: the topical "
            "pages of these docs.",
            "",
        ]
        lines += [f"- [`{name}`](#{_anchor(name)})" for name, _ in commands[1:]]
        for name, sub in commands:
            lines += ["", f"## {name}", "", "```text", sub.format_help().rstrip(), "```"]
        return "\n".join(lines) + "\n"
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def _anchor(title: str) -> str:
    """The id mkdocs (Python-Markdown's toc) gives a heading: lower case, spaces to dashes."""
    return "-".join(title.lower().replace("_", "_").split())


if __name__ == "__main__":
    print(reference_markdown(), end="")
