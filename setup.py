"""Package discovery: every subpackage of rganalysis/, plus adapters/ installed as rganalysis.adapters
(one module per checkpoint family, kept at the top of the repository).  Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["rganalysis", "rganalysis.*"]), "rganalysis.adapters"],
    package_dir={"rganalysis.adapters": "adapters"},
)
