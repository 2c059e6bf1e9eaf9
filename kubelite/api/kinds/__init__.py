"""The built-in kinds, one module per API group; `builtin` lists them all. Importing one kind module loads only
that module, so a process that needs a helper from one (the agent) does not hold every kind's schema."""
