"""`nirbench ...`: one module per subcommand (``register`` adds its parser, ``cmd_*`` parses,
calls the library and prints); ``main`` builds the parser from all of them."""

from nirbench.harness.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
