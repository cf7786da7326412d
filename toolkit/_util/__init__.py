"""Private helpers shared by every layer: locks, fault injection, progress, seeding, paths."""
