"""Media: the server end of each participant's peer connection and the encoded relay."""

from .aiortc_glue import install as install_passthrough
from .peer import NegotiationError, Peer, PeerState
from .recorder import Gap, RecordedFile, Recorder
from .room import MediaConsumer, MediaRoom

__all__ = [
    "Gap",
    "MediaConsumer",
    "MediaRoom",
    "NegotiationError",
    "Peer",
    "PeerState",
    "RecordedFile",
    "Recorder",
    "install_passthrough",
]
