"""The monitoring engine on faust: thin agents around the pure processors."""
