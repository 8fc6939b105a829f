# Only for what pyproject.toml cannot say: the compiled cffi module of the uAPI declarations.
from setuptools import setup

setup(cffi_modules=["gmemtest/kvm/_build_cffi.py:ffibuilder"])
