"""Named errors.  Every failure a user can cause raises a subclass of :class:`RGAnalysisError`;
the command line turns them into one clear message and exit status 2."""

from __future__ import annotations

__all__ = [
    "AdapterDeclined",
    "AdapterNotFoundError",
    "ArchitectureMismatchError",
    "CannotBuildModuleError",
    "ChecksumError",
    "ConcurrentWriteError",
    "CorruptCheckpointError",
    "CorruptStoreError",
    "DegenerateRegressionError",
    "DensityMismatchError",
    "DeviceUnavailableError",
    "DuplicateOutputError",
    "ExpandedTensorError",
    "IncompleteStoreError",
    "InsufficientResourcesError",
    "InvalidParameterError",
    "MaskMismatchError",
    "MaskShapeError",
    "MasksNotNestedError",
    "MissingTensorError",
    "NonBinaryMaskError",
    "NonFiniteWeightsError",
    "NotFittedError",
    "OutputExistsError",
    "OutputIsInputError",
    "PickleRefusedError",
    "ProcessStartError",
    "RGAnalysisError",
    "RankError",
    "RoundOutOfRangeError",
    "SparsityReportMismatchError",
    "StoreClosedError",
    "StoreFormatError",
    "StoreInUseError",
    "StoreLockedError",
    "TooFewRoundsError",
    "UnknownArchitectureError",
    "UnsafeLoadWarning",
]


class RGAnalysisError(Exception):
    """Base class of every error the toolkit raises on bad input."""


# --- reading checkpoints -------------------------------------------------------------------------
class CorruptCheckpointError(RGAnalysisError):
    """A checkpoint file is truncated, corrupt, or not a tensor file."""


class PickleRefusedError(RGAnalysisError):
    """A checkpoint needs full unpickling (it can run code); refused unless ``--allow-pickle``."""


class UnsafeLoadWarning(UserWarning):
    """A checkpoint is being unpickled with ``--allow-pickle``: it can run code.  Never silenced by ``-q``."""


class ExpandedTensorError(RGAnalysisError):
    """A checkpoint tensor is a broadcast view (stride 0) whose materialised size exceeds its stored data by
    more than :data:`rganalysis.store.checkpoint.MAX_EXPANSION`."""


class AdapterNotFoundError(RGAnalysisError):
    """No adapter accepted a source; the message lists each adapter tried and why it declined."""

    def __init__(self, source: object, reasons: dict[str, str]):
        self.source = source
        self.reasons = dict(reasons)
        lines = [f"no adapter can read {source}:"]
        lines += [f"  - {name}: {why}" for name, why in self.reasons.items()]
        super().__init__("\n".join(lines))


class AdapterDeclined(RGAnalysisError):
    """Raised by an adapter's ``detect`` to say why it does not handle a source."""


class UnknownArchitectureError(RGAnalysisError):
    """The user named an architecture the toolkit does not know."""


class ArchitectureMismatchError(UnknownArchitectureError):
    """``--architecture`` names another architecture than the checkpoint reads as."""


class CannotBuildModuleError(RGAnalysisError, NotImplementedError):
    """The adapter that read a set cannot build its architecture as a torch module (``to_module``)."""


class MaskShapeError(RGAnalysisError):
    """A mask's shape differs from its weight's."""


class NonBinaryMaskError(RGAnalysisError):
    """A mask holds values other than 0 and 1."""


class NonFiniteWeightsError(RGAnalysisError):
    """A weight tensor holds NaN or Inf."""


class MissingTensorError(RGAnalysisError):
    """A mask (or a key map) names a tensor that the model does not have."""


class MasksNotNestedError(RGAnalysisError):
    """The masks of a flow are not nested: a later round revives a weight an earlier one pruned."""


class MaskMismatchError(RGAnalysisError):
    """Two copies of one mask in a published layout disagree (e.g. a ticket file's ``mask`` entry and
    its ``weight_mask`` tensors, or open_lth's ``mask.pth`` and its ``PrunedModel`` mask buffers)."""


class SparsityReportMismatchError(RGAnalysisError):
    """An open_lth ``sparsity_report.json`` disagrees with its ``mask.pth``."""


# --- the store -----------------------------------------------------------------------------------
class OutputExistsError(RGAnalysisError):
    """The output file exists and ``force`` was not given."""


class ConcurrentWriteError(OutputExistsError):
    """The output was created by another writer while this one ran (creation is exclusive without ``force``)."""


class OutputIsInputError(RGAnalysisError):
    """An output resolves to an input of the same command (same file after symlinks, or same inode)."""


class DuplicateOutputError(RGAnalysisError):
    """Two outputs of one command resolve to the same file."""


class StoreClosedError(RGAnalysisError):
    """A tensor was read from a store after it was closed (a flow computed from a store reads its
    weights lazily from it: keep the store open while the flow is used)."""


class StoreInUseError(RGAnalysisError):
    """The store is open elsewhere in this process (read-only), so a group cannot be written into it."""


class StoreFormatError(RGAnalysisError):
    """A file is not an rganalysis store, or is of an unsupported format version."""


class IncompleteStoreError(StoreFormatError):
    """A store whose write did not finish (an interrupted write, or the temporary file of a running one)."""


class StoreLockedError(StoreFormatError):
    """A store is open for writing by another process (HDF5 file lock)."""


class CorruptStoreError(StoreFormatError):
    """A store's structure or values are not what its format says (missing group or variable, wrong
    shape or dtype, values out of range)."""


class ChecksumError(CorruptStoreError):
    """A dataset's data do not match the checksum recorded when it was written (bit rot or an edit)."""


class DensityMismatchError(CorruptStoreError):
    """A store's recorded density table disagrees with its masks."""


# --- the RG engine -------------------------------------------------------------------------------
class InvalidParameterError(RGAnalysisError, ValueError):
    """An argument is out of its domain (rate outside (0, 1), rounds < 1, ...)."""


class RoundOutOfRangeError(RGAnalysisError, IndexError):
    """A round number outside the set's rounds 0..R-1 (``--round 99``)."""


class DeviceUnavailableError(RGAnalysisError, ValueError):
    """The requested torch device (``--device cuda``, ``cuda:1``, ``mps``) is not available on this machine."""


class NotFittedError(RGAnalysisError, AttributeError):
    """A fitted attribute (a name ending in ``_``) read before ``fit``: call ``fit(...)`` first."""


class ProcessStartError(RGAnalysisError):
    """Worker processes cannot be started the way this program runs (e.g. spawned workers would re-run an
    unguarded script); refused before any work starts (:mod:`rganalysis.parallel`)."""


class InsufficientResourcesError(RGAnalysisError):
    """A computation would not fit in the memory or on the disk available (refused before it starts)."""


class TooFewRoundsError(RGAnalysisError):
    """A flow has too few rounds to fit the requested number of couplings."""


class DegenerateRegressionError(RGAnalysisError):
    """A regression has no information in some direction (e.g. perturbations that leave the couplings unchanged)."""


class RankError(RGAnalysisError):
    """More rank was asked for than the data allow."""
