"""Launch: run the engine on N Ray Train workers (DDP), or in this process."""
