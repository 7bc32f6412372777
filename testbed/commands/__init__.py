"""One module per CLI verb: each registers its arguments with `add_parser(subparsers)` and holds the handler.
Handlers only parse and print; the work is done by the modules they import."""
