"""The pack's own error types. Every failure a user can cause ends in one of these, with a message that
says what was wrong and what to do about it."""

from __future__ import annotations


class MotionInversionError(Exception):
    """Base class of every error the pack raises on purpose."""


class VideoInputError(MotionInversionError):
    """A video file or frame batch cannot be used as input (unreadable, empty, too short, bad size)."""


class ModelLoadError(MotionInversionError):
    """A model folder is missing, incomplete, or of a family the pack does not support."""


class EmbeddingFileError(MotionInversionError):
    """A motion embedding file is not readable: not safetensors, truncated, bad metadata or shapes."""


class IncompatibleEmbeddingError(MotionInversionError):
    """A motion embedding was trained on a model that does not fit the one it is applied to."""


class InvalidSettingError(MotionInversionError):
    """A setting is out of range (zero steps, empty prompt, a size that will not fit in memory, ...)."""


class TrainingDivergedError(MotionInversionError):
    """Training produced a NaN or infinite loss; the last good embedding was kept."""


class SamplingError(MotionInversionError):
    """A generation went numerically wrong (NaN or infinite latents or frames); nothing was written."""


class EmbeddingSaveError(MotionInversionError):
    """A trained embedding could not be written where asked; the message says where it was kept instead."""
