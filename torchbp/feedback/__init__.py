"""Feedback rules: how δ reaches the layer below (backprop, fa, dfa, usf, brsf, frsf, kolen_pollack).

See ``torchbp.feedback.base`` for what a rule is and ``torchbp.feedback.rules`` for the
built-ins; ``torchbp.nn.convert`` (``feedback=``) puts one in a model.
"""

from .base import FeedbackRule, OutputError
from .layer_equations import WithFeedback
from .rules import (
    Backprop,
    BatchRandomSignFeedback,
    DirectFeedbackAlignment,
    FeedbackAlignment,
    FixedRandomSignFeedback,
    KolenPollack,
    UniformSignFeedback,
)

__all__ = [
    "Backprop",
    "BatchRandomSignFeedback",
    "DirectFeedbackAlignment",
    "FeedbackAlignment",
    "FeedbackRule",
    "FixedRandomSignFeedback",
    "KolenPollack",
    "OutputError",
    "UniformSignFeedback",
    "WithFeedback",
]
