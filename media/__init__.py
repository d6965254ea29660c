"""Media: the server end of each participant's peer connection and the encoded relay."""

from .aiortc_glue import install as install_passthrough
from .peer import NegotiationError, PeerState
from .room import MediaRoom

__all__ = ["MediaRoom", "NegotiationError", "PeerState", "install_passthrough"]
