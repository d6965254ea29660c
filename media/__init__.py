"""Media: the server end of each participant's peer connection and the encoded relay."""

from .aiortc_glue import install as install_passthrough
from .peer import NegotiationError, PeerState
from .room import MediaConsumer, MediaRoom

__all__ = ["MediaConsumer", "MediaRoom", "NegotiationError", "PeerState", "install_passthrough"]
