"""The aiohttp inference server with dynamic request batching."""
