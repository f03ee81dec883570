"""facelab: Keras experiments for facial-attribute classification."""

__version__ = "0.1.0"
