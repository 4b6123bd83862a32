"""CLI subcommands, one module each (see mobilize/cli.py)."""
