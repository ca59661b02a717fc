"""Warm start: `posemb serve` keeps models loaded, and every command is answered by it when it runs.

protocol.py  the private folder and socket, message framing and limits, request checks, the identity a client and a
             server must share; standard library only
client.py    the light client (no torch, transformers, matplotlib or numpy): hands its argv, working directory,
             environment and stdin/stdout/stderr to the server, forwards Ctrl-C, returns the exit code; `--status`,
             `--stop`, `--detach`
server.py    the server: one loop that forks a child per request; the child runs the normal command line (cli.app)
             on the client's file descriptors, with the models the server holds (models.enable_load_cache)
"""
