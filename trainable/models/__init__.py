"""Video backbones by name: ``build("resnet3d_50", num_classes=101, frames=8, size=224)``."""

from trainable.models import resnet3d, timesformer  # noqa: F401  (registers the builders)
from trainable.models.heads import ProjectionHead, TeacherProjection
from trainable.models.registry import VideoClassifier, available, build, check_complete

check_complete()  # every name in trainable.catalog.BACKBONES is now buildable

__all__ = ["ProjectionHead", "TeacherProjection", "VideoClassifier", "available", "build"]
