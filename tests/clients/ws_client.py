#!/usr/bin/env python3
"""An independent WebSocket client (the `websockets` library) for floodgate's streams.

Usage: ws_client.py HOST:PORT JOB_ID

1. Follows /api/v2/jobs/JOB_ID/events until the server closes the stream, and checks the
   statuses it saw go from `queued` or `running` to `succeeded`, with a normal close (1000).
   The caller holds the job running until this client's stream is open.
2. Reads at least ten messages of /api/v2/stats/stream?interval=200ms while it sends 100 requests,
   and checks that the rates agree with the totals: over the messages after the first, the
   sum of requests_per_second x interval equals the growth of total_requests, which counts
   at least the 100 requests sent.

Prints one JSON line with what it saw; exits non-zero with the reason on any mismatch.
"""
import asyncio
import json
import sys
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def post(base, path, body):
    req = urllib.request.Request(
        f"http://{base}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


async def follow_job(base, job_id):
    statuses = []
    async with connect(f"ws://{base}/api/v2/jobs/{job_id}/events", open_timeout=10) as ws:
        try:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert message["id"] == job_id, message
                statuses.append(message["status"])
        except ConnectionClosed:
            pass
        code = ws.close_code
    assert statuses and statuses[-1] == "succeeded", statuses
    assert code == 1000, (code, statuses)
    assert statuses[0] in ("queued", "running"), statuses
    return {"statuses": statuses, "close_code": code}


async def stats_under_load(base, sent=100):
    async with connect(f"ws://{base}/api/v2/stats/stream?interval=200ms", open_timeout=10) as ws:
        messages = [json.loads(await asyncio.wait_for(ws.recv(), 10))]
        loop = asyncio.get_running_loop()

        def load():
            for n in range(sent):
                status, _ = post(base, "/api/v1/compute/fast", {"number": n})
                assert status == 200, status

        load_done = loop.run_in_executor(None, load)
        # Ten messages at least, and one that left after the load had finished.
        finished_before = False
        while len(messages) < 10 or not finished_before:
            finished_before = load_done.done()
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        await load_done
    for m in messages:
        # The interval asked for, or a multiple after a tick the server missed.
        assert m["interval_ms"] >= 200 and m["interval_ms"] % 200 == 0, m
    grown = messages[-1]["total_requests"] - messages[0]["total_requests"]
    by_rates = sum(m["requests_per_second"] * m["interval_ms"] / 1000 for m in messages[1:])
    # Each message's rate and totals come from one reading of the counters.
    assert abs(by_rates - grown) <= 1.0, (by_rates, grown, messages)
    assert grown >= sent, (grown, sent)
    assert max(m["requests_per_second"] for m in messages) > 0, messages
    return {"grown": grown, "by_rates": by_rates, "messages": len(messages)}


async def main(base, job_id):
    job = await follow_job(base, job_id)
    stats = await stats_under_load(base)
    print(json.dumps({"job": job, "stats": stats}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
