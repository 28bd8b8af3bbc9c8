"""Everything that touches Ethereum: Livepeer tickets, redemption, rewards and staking."""

__all__: list[str] = []
