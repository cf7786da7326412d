"""Runners with their protocol constants: the demo, the probe demo, the task suite and the
dose-response study. Nothing below this layer imports them."""
