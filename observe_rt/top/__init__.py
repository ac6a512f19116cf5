"""`observe-rt top`: the terminal live view, a client of the daemon's read API and CRI."""
