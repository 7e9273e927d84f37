"""nestor_core: its metadata and ament data files are in setup.cfg."""

from setuptools import setup

setup()
