"""Entry point (``python -m geomail``, the console script and the PyInstaller binary)."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402


def main() -> None:
    """Run the command line and exit with its status."""
    from geomail.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
