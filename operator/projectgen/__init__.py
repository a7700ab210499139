"""projectgen: a Kubernetes operator that generates software projects and ships them."""

__version__ = "0.1.0"
