"""One module per `raftbench` subcommand."""
