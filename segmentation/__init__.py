"""Nightly customer segmentation on PostgreSQL, orchestrated by Prefect 3."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("customer-segmentation")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
