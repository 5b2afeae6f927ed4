"""Plumbing between DVC and the library: stage command lines, the params check that runs
before any stage, and the warm launcher. Nothing here changes a result."""
