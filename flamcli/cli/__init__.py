"""The command-line layer: parses options, calls the library, writes outputs."""
