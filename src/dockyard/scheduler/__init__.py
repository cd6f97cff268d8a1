"""Pure scheduling: placement of tasks on nodes. No I/O, no clock reads."""
