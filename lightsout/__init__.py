"""The local host and the command line of Lightsout."""
