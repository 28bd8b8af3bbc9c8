"""farm exporter's chain state, read from the contracts on anvil."""

from __future__ import annotations

from farm import metrics
from farm.exporter import ExporterConfig, collect_chain
from tests.chain.test_client import Env, base, env  # noqa: F401 - fixtures


def test_exporter_reads_chain_state(env: Env, sqlite_url: str) -> None:  # noqa: F811
    orchestrator = env.chain.orchestrator.address
    sender = env.chain.broadcaster.address
    config = ExporterConfig(
        chain_url=env.chain.rpc_url,
        controller=env.chain.contracts["Controller"],
        orchestrator=orchestrator,
        senders=(sender,),
        ticket_queue_url=sqlite_url,
    )
    assert collect_chain(config)
    text = metrics.render().decode()
    info = env.client.sender_info(env.sender)
    assert (
        f'farm_chain_sender_deposit_wei{{sender="{sender.lower()}"}} {float(info.deposit)}' in text
    )
    assert f'farm_chain_orchestrator_active{{orchestrator="{orchestrator.lower()}"}} 1.0' in text
    assert f"farm_chain_current_round {float(env.client.current_round())}" in text
    assert 'farm_chain_winning_tickets{state="pending"} 0.0' in text
    down = ExporterConfig(
        chain_url="http://127.0.0.1:9",
        controller=env.chain.contracts["Controller"],
        orchestrator=orchestrator,
        timeout_s=1,
    )
    assert not collect_chain(down)
    assert 'farm_exporter_target_up{target="chain"} 0.0' in metrics.render().decode()
