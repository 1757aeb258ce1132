"""The reliability suite (issue 7): fault injection against the daemon as a real subprocess."""
