"""One module per group of commands; each registers its commands on the root app."""
