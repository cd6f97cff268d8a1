"""Pure domain model: resources, specs, task states, events. Standard library only."""
