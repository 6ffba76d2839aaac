"""The Koopman view: exact DMD of the parameters of a flow, streamed from its store, and its modes."""

from rganalysis.koopman.dmd import KoopmanDMD
from rganalysis.koopman.modes import mode_groups, write_modes
from rganalysis.koopman.snapshots import StoreSnapshots, snapshot_provider
from rganalysis.koopman.summary import format_koopman, koopman_json

__all__ = [
    "KoopmanDMD",
    "StoreSnapshots",
    "format_koopman",
    "koopman_json",
    "mode_groups",
    "snapshot_provider",
    "write_modes",
]
