"""advland: does adversarial training make the weight loss landscape sharper?"""

__version__ = "0.1.0"
