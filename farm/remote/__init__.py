"""Remote transcoders: machines that attach to an orchestrator with its orchSecret."""

from farm.remote.roster import Roster, TranscoderRecord

__all__ = ["Roster", "TranscoderRecord"]
