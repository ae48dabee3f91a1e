"""Small shared utilities (checkpoint I/O, seeding, device helpers)."""
