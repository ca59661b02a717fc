"""The `posemb` command (and `python -m posemb_cli`): a running `posemb serve` answers it when there is one
(server/client.py, which imports nothing heavy); otherwise it runs here, in cli.py."""

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
