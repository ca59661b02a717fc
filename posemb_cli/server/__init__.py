"""Warm start: `posemb serve` keeps models loaded, and every command is answered by it when it runs.

protocol.py  the private folder and socket, message framing and limits, request checks, the identity a client and a
             server must share; standard library only
client.py    the light client (no torch, transformers, matplotlib or numpy): starts the server when none runs (the
             first command; not with CI=true or POSEMB_SERVER=off), hands its argv, working directory, environment,
             process setting and stdin/stdout/stderr to it, passes signals on (Ctrl-C, Ctrl-Z, SIGTERM), returns the
             exit code; `--status`, `--stop`, `--detach`
server.py    the server: one loop that forks a child per request; the child takes the client's umask and resource
             limits and runs the normal command line (cli.app) on the client's file descriptors, with the models the
             server holds (models.enable_load_cache)
Guarantees (same behaviour as in-process or the client runs the command itself; faults; hostile requests; trust):
docs/serve.md.
"""
