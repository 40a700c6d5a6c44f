"""A bare aiohttp + uvloop handler that answers every recommendation request with a static list: no validation,
no batching, no model. The floor this machine and client set for the infrastructure test (the reference figure).

    python benchmarks/static_server.py --port 8092
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

ANSWER = b'{"items": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]}'


async def ping(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status": "ok"}', content_type="application/json")


async def recommend(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8092)
    args = p.parse_args()
    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_post("/v1/recommend", recommend)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
