"""make bench-orchestrator: what ``POST /segment`` adds over a direct submit, tickets included.

One cluster (Redis broker, results and registry; jobs in PostgreSQL; one CPU worker), and in
front of it ``farm node`` over TLS as a Livepeer orchestrator on anvil with the development
contracts. In one run, one segment at a time, 2-second 360p segments into two renditions:

- direct: ``FarmClient.submit`` and ``wait`` (what ``make bench-farm`` measures);
- /segment: a go-livepeer-style gateway (tests.farm.livepeer_gateway) posts each segment with
  a signed SegData and a ``net.Payment`` whose tickets cover it, and reads the TranscodeResult.

Tickets carry an expected value of about a third of a segment, so each segment pays with a few
of them. Two nodes quote them two ways:

- at network odds: the face value by go-livepeer's rule (the redemption's gas cost times the
  multiplier, capped by the sender's float), so a winner is as rare as on the network;
- every ticket wins (face value = EV): each segment also stores its winners durably before the
  work starts, the worst case.

The target is read on the first; both are printed. Overhead = end-to-end time minus the
engine's own time for that job (from the job's result).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis
from sqlalchemy import create_engine

from chain.devchain import bootstrap, start_anvil
from chain.payment import price_from_net
from chain.queue import TicketQueue
from farm.client import FarmClient
from farm.golivepeer import net_pb2
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.orchestrator.segdata import decode_segment
from farm.orchestrator.service import segment_job_id
from tests.bench.bench_farm import overhead, pct
from tests.farm.harness import Cluster, cluster_env
from tests.farm.test_orchestrator import OrchestratorNode
from tests.farm.test_orchestrator_chain import chain_env

LADDER = parse_profiles("P240p30fps16x9,P144p30fps16x9")


def segment_overhead(
    node: OrchestratorNode, client: FarmClient, key: str, n: int
) -> dict[str, list[float]]:
    gw = node.gateway(key)
    session = gw.session()
    samples: dict[str, list[float]] = {"overhead": [], "tickets": [], "sender": []}
    try:
        for seq in range(n + 3):
            data = make_segment(640, 360, 30, 2.0, start=2.0 * seq)
            t = time.perf_counter()
            seg = gw.seg_data(session, "bench", seq, data, LADDER, 2000)
            header, count = gw.payment(session, _fee(session))
            sent = time.perf_counter()
            r = gw.post_segment(session, seg, data, payment=header)
            total = time.perf_counter() - t
            assert r.status_code == 200, r.text
            result = net_pb2.TranscodeResult.FromString(r.content)
            assert result.WhichOneof("result") == "data", result.error
            price = price_from_net(session.info.price_info)
            session.balance -= price * sum(x.pixels for x in result.data.segments)
            session.info = result.info
            session.nonce = 0
            sid = seg.auth_token.session_id
            job = client.get(segment_job_id(sid, decode_segment(_b64(seg))))
            assert job.result is not None
            engine = job.result["timings"]["engine"]
            if seq >= 3:  # warm-up: worker imports, first connections
                samples["overhead"].append(total - engine)
                samples["sender"].append(sent - t)
                samples["tickets"].append(count)
    finally:
        gw.close()
    return samples


def _b64(seg: net_pb2.SegData) -> str:
    return base64.b64encode(seg.SerializeToString()).decode()


def _fee(session) -> object:  # type: ignore[no-untyped-def]
    from fractions import Fraction

    from chain.sender import FEE_MARGIN, fee_pixels

    pixels = fee_pixels(((p.width, p.height, Fraction(p.fps)) for p in LADDER), 2.0)
    return pixels * FEE_MARGIN * price_from_net(session.info.price_info)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    db = 6
    r = redis.Redis(db=db)
    r.flushdb()
    anvil = start_anvil()
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        home = Path(tmp)
        devchain = bootstrap(anvil.web3(), home / "devchain.json")
        env = cluster_env(home, f"redis://127.0.0.1:6379/{db}", args.database)
        env["FARM_QUEUED_TIMEOUT_S"] = "600"
        env["FARM_HEARTBEAT_S"] = "2"
        env.update(chain_env(devchain))
        env["FARM_MAX_SESSIONS"] = "100"
        ev = 3 * 10**13
        env["FARM_TICKET_EV_WEI"] = str(ev)
        env.pop("FARM_TICKET_MAX_FACE_VALUE_WEI", None)
        cluster = Cluster(home, env)
        client = cluster.client()
        client.jobs.create_schema()
        queue = TicketQueue(create_engine(args.database))
        key = devchain.broadcaster.private_key
        try:
            cluster.start_worker(concurrency=1)
            nodes = {
                "network odds": OrchestratorNode(cluster),
                "every ticket wins": OrchestratorNode(
                    cluster, FARM_TICKET_MAX_FACE_VALUE_WEI=str(ev)
                ),
            }
            rounds = 2
            direct: list[float] = []
            orch: dict[str, list[float]] = {name: [] for name in nodes}
            sender: dict[str, list[float]] = {name: [] for name in nodes}
            tickets = dict.fromkeys(nodes, 0.0)
            winners = dict.fromkeys(nodes, 0)
            for _ in range(rounds):  # alternate, so drift hits all alike
                direct += overhead(client, args.jobs // rounds)
                for name, node in nodes.items():
                    before = queue.counts().get("pending", 0)
                    got = segment_overhead(node, client, key, args.jobs // rounds)
                    winners[name] += queue.counts().get("pending", 0) - before
                    orch[name] += got["overhead"]
                    sender[name] += got["sender"]
                    tickets[name] += sum(got["tickets"])
            for node in nodes.values():
                node.close()
        finally:
            cluster.stop()
            anvil.stop()
            r.flushdb()
            r.close()
    d50, d99 = statistics.median(direct), pct(direct, 0.99)
    print(f"machine: {os.cpu_count()} cores; jobs in PostgreSQL, broker Redis, chain anvil")
    print(
        f"direct submit overhead ({len(direct)} segments): "
        f"p50 {d50 * 1000:.1f} ms, p99 {d99 * 1000:.1f} ms"
    )
    for name, samples in orch.items():
        o50, o99 = statistics.median(samples), pct(samples, 0.99)
        target = " (target <= +10 ms)" if name == "network odds" else ""
        print(
            f"/segment, tickets at {name} ({len(samples)} segments, {tickets[name]:.0f} "
            f"tickets validated; {winners[name]} winners stored, warm-up included): "
            f"p50 {o50 * 1000:.1f} ms, p99 {o99 * 1000:.1f} ms; over direct: "
            f"p50 {(o50 - d50) * 1000:+.1f} ms{target}, p99 {(o99 - d99) * 1000:+.1f} ms"
        )
        # The sender's own work (hashing the segment, signing its SegData and tickets) is in
        # the figures above; what the node adds is the request from its sending on.
        sent_on = [o - s for o, s in zip(samples, sender[name], strict=True)]
        n50, n99 = statistics.median(sent_on), pct(sent_on, 0.99)
        print(
            f"  of which the sender's hashing and signing p50 "
            f"{statistics.median(sender[name]) * 1000:.1f} ms; from the request's sending on: "
            f"p50 {n50 * 1000:.1f} ms, p99 {n99 * 1000:.1f} ms, over direct p50 "
            f"{(n50 - d50) * 1000:+.1f} ms, p99 {(n99 - d99) * 1000:+.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
