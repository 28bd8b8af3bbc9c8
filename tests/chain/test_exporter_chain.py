"""farm exporter's chain state, read from the contracts on anvil."""

from __future__ import annotations

from farm import metrics
from farm.exporter import collect_chain
from farm.settings import ExporterSettings
from tests.chain.test_client import Env, base, env  # noqa: F401 - fixtures


def test_exporter_reads_chain_state(env: Env, sqlite_url: str) -> None:  # noqa: F811
    orchestrator = env.chain.orchestrator.address
    sender = env.chain.broadcaster.address
    config = ExporterSettings(
        eth_rpc_url=env.chain.rpc_url,
        eth_controller=env.chain.contracts["Controller"],
        exporter_orchestrator=orchestrator,
        exporter_senders=(sender,),
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
    down = ExporterSettings(
        eth_rpc_url="http://127.0.0.1:9",
        eth_controller=env.chain.contracts["Controller"],
        exporter_orchestrator=orchestrator,
        exporter_timeout_s=1,
    )
    assert not collect_chain(down)
    assert 'farm_exporter_target_up{target="chain"} 0.0' in metrics.render().decode()
