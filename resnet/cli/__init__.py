"""``python -m resnet``: one module per command (``add_arguments(parser)`` and ``run(args) -> int``) and the
argument plumbing they share (:mod:`~resnet.cli.options`). The only layer that turns the library's errors into
exit statuses and one-line messages."""
