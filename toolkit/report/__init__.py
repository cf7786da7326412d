"""What people look at: figures (which compute nothing), the HTML report, the pool explorer,
and plain-text tables."""
