"""The baseline for make bench-gateway: a bare FastAPI endpoint served the same way."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/api/transcode")
async def transcode(request: Request) -> dict[str, bool]:
    await request.body()
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
