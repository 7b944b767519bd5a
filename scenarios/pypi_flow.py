"""@pypi_base / @pypi, run with --environment=pypi."""

from metaflow import FlowSpec, pypi, pypi_base, step


@pypi_base(packages={"six": "1.16.0"})
class PyPIFlow(FlowSpec):
    @step
    def start(self):
        import six

        self.six_start = six.__version__
        self.next(self.end)

    @pypi(packages={"six": "1.17.0", "idna": "3.10"})
    @step
    def end(self):
        import idna
        import six

        self.six_end = six.__version__
        self.idna_end = idna.__version__


if __name__ == "__main__":
    PyPIFlow()
