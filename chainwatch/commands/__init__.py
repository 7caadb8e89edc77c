"""One module per command group that a later issue fills in; each has `register(app)`."""
