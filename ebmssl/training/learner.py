"""Re-exports: the joint-embedding learner lives in :mod:`ebmssl.models.architectures.joint_embedding`,
the architecture dispatch (with the collapse guard) in :mod:`ebmssl.models.architectures`."""

from ebmssl.models.architectures import build_learner
from ebmssl.models.architectures.base import LearnerOutput
from ebmssl.models.architectures.joint_embedding import Branch, Learner, build_joint_embedding

__all__ = ["Branch", "Learner", "LearnerOutput", "build_joint_embedding", "build_learner"]
