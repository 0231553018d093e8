"""Registry: model versions, flavors, aliases."""
