"""Warm start: `posemb serve` keeps models loaded, and every command is answered by it when it runs.

protocol.py  the private folder and socket, message framing and limits, request checks, the identity a client and a
             server must share; standard library only
client.py    the light client (no torch, transformers, matplotlib or numpy): starts the server when none runs (the
             first command; not with CI=true or POSEMB_SERVER=off), hands its argv, working directory, environment,
             process setting and stdin/stdout/stderr to it, passes signals on (Ctrl-C, Ctrl-Z, SIGTERM), returns the
             exit code; `--status`, `--stop`, `--detach`
loop.py      the server loop: accepts connections, checks peers and requests, forks a child per request, passes
             signals on, keeps the models requests used warm (models.enable_load_cache), --status, --stop, idle exit
child.py     the forked child: takes the client's umask, resource limits, environment and file descriptors and runs
             the app it is given (cli.app, the normal command line)
lifecycle.py serve(app, ...): the pid file lock, the log, the socket, warm-up imports, clean-up at the end
Guarantees (same behaviour as in-process or the client runs the command itself; faults; hostile requests; trust):
docs/serve.md.
"""
