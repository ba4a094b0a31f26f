"""pgrl: REINFORCE policy gradients with interchangeable NumPy and TensorFlow backends.

``import pgrl`` loads NumPy only; TensorFlow is imported when its backend is first used.
"""

from pgrl.optim import RMSprop
from pgrl.policies import make_policy
from pgrl.returns import discount_rewards, standardize

__version__ = "0.1.0"

__all__ = ["RMSprop", "__version__", "discount_rewards", "make_policy", "standardize"]
