"""The `posemb` command (and `python -m posemb_cli`): the per-user `posemb serve` answers it (server/client.py, which
imports nothing heavy; the first command with no server running starts one); otherwise it runs here, in cli.py."""

import sys


def main() -> None:
    from .server.client import forward

    code = forward(sys.argv)
    if code is not None:
        sys.exit(code)
    from .cli import run

    run()


if __name__ == "__main__":
    main()
