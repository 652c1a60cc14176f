"""The cache's contract, run on every client (sync, asyncio) and every Redis deployment."""
