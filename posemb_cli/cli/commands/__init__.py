"""One module per command (stats and stats merge share one): a function that parses its options, calls one
computation and hands the result to its `render.emit` entry point. `cli/__init__.py` registers them."""
