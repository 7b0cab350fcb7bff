"""The version of latentar: one place, read by the package metadata, ``latentar --version``
and every saved model's config.json."""

__version__ = "0.2.0"
