"""Packaging for the iris trainer, as `gcloud ai-platform jobs submit training` expects."""

from __future__ import annotations

from setuptools import find_packages, setup

setup(
    name="iris-trainer",
    version="0.1",
    packages=find_packages(include=["trainer", "trainer.*"]),
    install_requires=["scikit-learn", "torch"],
)
