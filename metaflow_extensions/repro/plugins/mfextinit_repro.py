# repro's Metaflow extension: replaces the built-in `conda`/`pypi` environments and the
# `conda`, `conda_base`, `pypi`, `pypi_base` decorators with repro's locked, verified ones.
# Everything here is imported inside tasks too: standard library and Metaflow only, Python 3.7+.
# The `repro` card type (card.py) is not listed here: Metaflow 2.19 has no CARDS_DESC and finds card
# types in the `cards` package beside this file (its CARDS list).

STEP_DECORATORS_DESC = [
    ("conda", ".decorators.CondaStepDecorator"),
    ("pypi", ".decorators.PyPIStepDecorator"),
]
FLOW_DECORATORS_DESC = [
    ("conda_base", ".decorators.CondaFlowDecorator"),
    ("pypi_base", ".decorators.PyPIFlowDecorator"),
]
ENVIRONMENTS_DESC = [
    ("conda", ".environment.CondaEnvironment"),
    ("pypi", ".environment.PyPIEnvironment"),
]
