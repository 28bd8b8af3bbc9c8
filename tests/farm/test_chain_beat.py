"""Chain work on celery beat, on anvil: winners redeemed in a batch, reward once per round,
also when beat and the chain worker are killed and restarted mid-round."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import create_engine

from chain.queue import TicketQueue
from tests.chain.test_client import Env, base, env  # noqa: F401 - fixtures
from tests.farm.harness import Cluster, cluster_env, wait_for


def test_beat_redeems_winners_and_claims_the_reward(
    env: Env,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    redis_url: str,
    sqlite_url: str,
) -> None:
    env.next_round()  # a round the orchestrator has not rewarded yet
    winners = env.winning(3)
    engine = create_engine(sqlite_url)
    queue = TicketQueue(engine)
    queue.create_schema()
    for ticket, sig, rand, expiration in winners:
        assert queue.add(ticket, sig, rand, expiration)
    env.mine_past(max(w[3] for w in winners))
    fees_before = env.client.fees(env.orch)
    variables = cluster_env(tmp_path, redis_url, sqlite_url)
    variables.update(
        {
            "FARM_ETH_RPC_URL": env.chain.rpc_url,
            "FARM_ETH_CONTROLLER": env.chain.contracts["Controller"],
            "FARM_ETH_PRIVATE_KEY": env.chain.orchestrator.private_key,
            "FARM_REDEEM_INTERVAL_S": "1",
            "FARM_REWARD_INTERVAL_S": "1",
        }
    )
    cluster = Cluster(tmp_path, variables)
    try:
        worker = cluster.start_worker("--chain")
        beat = cluster.start_beat()
        wait_for(lambda: not queue.pending(), timeout=60, what="the winners to be redeemed")
        earned = env.client.fees(env.orch) - fees_before
        # All of it (one delegator), less a few wei of the pool's fixed-point rounding.
        assert 0 <= sum(w[0].face_value for w in winners) - earned <= 100
        current = env.client.current_round()
        wait_for(
            lambda: env.client.transcoder_info(env.orch).last_reward_round == current,
            timeout=60,
            what="the reward of this round",
        )
        rewards = env.tx_count()
        time.sleep(3)  # three more beats: no second reward call in the same round
        assert env.tx_count() == rewards

        # kill -9 beat and the chain worker mid-round and start them again: the new ones
        # read lastRewardRound from the chain and leave this round alone.
        cluster.kill9(beat)
        cluster.kill9(worker)
        cluster.start_worker("--chain")
        cluster.start_beat()
        time.sleep(4)
        assert env.tx_count() == rewards
        assert env.client.transcoder_info(env.orch).last_reward_round == current

        # The next round is claimed once, by the restarted pair.
        env.next_round()
        wait_for(
            lambda: env.client.transcoder_info(env.orch).last_reward_round == current + 1,
            timeout=60,
            what="the reward of the next round",
        )
        claimed = env.tx_count()
        time.sleep(3)
        assert env.tx_count() == claimed
    finally:
        cluster.stop()
        engine.dispose()
