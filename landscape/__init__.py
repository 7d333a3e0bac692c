"""landscape: see and measure the geometry of a neural network's loss around trained weights."""

__version__ = "0.1.0"
